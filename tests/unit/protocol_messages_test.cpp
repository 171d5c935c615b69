// The messages carried in frames: exact encodings, round trips, and the
// decoders' refusal of anything but an exact, well-formed payload.
#include "test_support.hpp"

#include <rfork/detail/wire.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <system_error>

namespace proto = rfork::protocol;
using rfork::errc;
using rfork::detail::wire_writer;
using rfork_test::bytes;
using rfork_test::check_exact_length_required;
using rfork_test::decode_as;
using rfork_test::payload_of;

namespace {

const std::string at_limit(proto::max_text, 'h');
const std::string over_limit(proto::max_text + 1, 'h');

}  // namespace

TEST_SUITE("unit.messages") {

TEST_CASE("messages: protocol::encode frames the payload with the message's type") {
    const proto::fork_request m{"node2:7000", 42};
    const auto frame = proto::encode(m);
    CHECK(frame == proto::encode_frame(proto::message_type::fork_request, payload_of(m)));
    CHECK(proto::encode(proto::image_end{}) == proto::encode_frame(proto::message_type::image_end, {}));
}

TEST_CASE("messages: encodings are byte-exact and big-endian") {
    SUBCASE("fork_request") {
        const bytes want = {0, 0, 0, 3, 'h', ':', '1', 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0, 0, 0, 1};
        CHECK(payload_of(proto::fork_request{"h:1", 0x0102030405060708u, proto::fork_request::forward_stdin}) == want);
    }
    SUBCASE("fork_reply") {
        proto::fork_reply m;
        m.side = proto::fork_side::child;
        m.child_id = "c";
        m.host = "hb";
        m.pid = 0x01020304;
        const bytes want = {2, 0, 0, 0, 1, 'c', 0, 0, 0, 2, 'h', 'b', 0x01, 0x02, 0x03, 0x04};
        CHECK(payload_of(m) == want);
    }
    SUBCASE("error_message") {
        proto::error_message m{rfork::errc::bad_magic, "no"};
        const bytes want = {0, 64, 0, 0, 0, 2, 'n', 'o'};
        CHECK(payload_of(m) == want);
    }
}

TEST_CASE("messages: error_message") {
    SUBCASE("round trip") {
        const proto::error_message m{errc::restore_failed, "criu: restore failed: (-1) ENOENT"};
        proto::error_message out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.code == errc::restore_failed);
        CHECK(&out.code.category() == &rfork::category());
        CHECK(out.text == m.text);
    }
    SUBCASE("empty text") {
        proto::error_message out;
        out.text = "stale";
        REQUIRE_FALSE(proto::decode(payload_of(proto::error_message{errc::not_permitted, ""}), out));
        CHECK(out.code == errc::not_permitted);
        CHECK(out.text.empty());
    }
    SUBCASE("exact length") { check_exact_length_required(proto::error_message{errc::dump_failed, "why"}); }
    SUBCASE("a code of another category goes on the wire as internal_error") {
        const proto::error_message m{std::make_error_code(std::errc::permission_denied), "x"};
        proto::error_message out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.code == errc::internal_error);
    }
    SUBCASE("an over-long text is cut to max_text on encode") {
        proto::error_message out;
        REQUIRE_FALSE(proto::decode(payload_of(proto::error_message{errc::dump_failed, over_limit}), out));
        CHECK(out.text == at_limit);
    }
    SUBCASE("an over-long text is refused on decode") {
        bytes p;
        wire_writer w(p);
        w.u16(static_cast<std::uint16_t>(errc::dump_failed));
        w.str(over_limit);
        CHECK(decode_as<proto::error_message>(p) == errc::malformed_message);
    }
    SUBCASE("code 0 (success) is not an error") {
        bytes p;
        wire_writer w(p);
        w.u16(0);
        w.str("x");
        CHECK(decode_as<proto::error_message>(p) == errc::malformed_message);
    }
}

TEST_CASE("messages: fork_request") {
    SUBCASE("round trip") {
        const proto::fork_request m{"[fe80::1]:7000", std::numeric_limits<std::uint64_t>::max()};
        proto::fork_request out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.endpoint == m.endpoint);
        CHECK(out.socket_inode == m.socket_inode);
    }
    SUBCASE("exact length") { check_exact_length_required(proto::fork_request{"b:7000", 12345}); }
    SUBCASE("endpoint at the limit") {
        CHECK_FALSE(decode_as<proto::fork_request>(payload_of(proto::fork_request{at_limit, 1})));
    }
    SUBCASE("endpoint over the limit") {
        CHECK(decode_as<proto::fork_request>(payload_of(proto::fork_request{over_limit, 1})) ==
              errc::malformed_message);
    }
    SUBCASE("empty endpoint") {
        CHECK(decode_as<proto::fork_request>(payload_of(proto::fork_request{"", 1})) == errc::malformed_message);
    }
    SUBCASE("zero inode") {
        CHECK(decode_as<proto::fork_request>(payload_of(proto::fork_request{"b:7000", 0})) ==
              errc::malformed_message);
    }
}

TEST_CASE("messages: fork_reply") {
    proto::fork_reply valid;
    valid.side = proto::fork_side::parent;
    valid.child_id = "7f3a";
    valid.host = "node2";
    valid.pid = 4242;

    SUBCASE("round trip, both sides") {
        for (auto side : {proto::fork_side::parent, proto::fork_side::child}) {
            CAPTURE(side);
            auto m = valid;
            m.side = side;
            proto::fork_reply out;
            out.side = side == proto::fork_side::parent ? proto::fork_side::child : proto::fork_side::parent;
            REQUIRE_FALSE(proto::decode(payload_of(m), out));
            CHECK(out.side == side);
            CHECK(out.child_id == m.child_id);
            CHECK(out.host == m.host);
            CHECK(out.pid == m.pid);
        }
    }
    SUBCASE("exact length") { check_exact_length_required(valid); }
    SUBCASE("strings at the limit") {
        auto m = valid;
        m.child_id = at_limit;
        m.host = at_limit;
        CHECK_FALSE(decode_as<proto::fork_reply>(payload_of(m)));
    }
    SUBCASE("child_id over the limit") {
        auto m = valid;
        m.child_id = over_limit;
        CHECK(decode_as<proto::fork_reply>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("host over the limit") {
        auto m = valid;
        m.host = over_limit;
        CHECK(decode_as<proto::fork_reply>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("side neither parent nor child") {
        for (unsigned side : {0u, 3u, 255u}) {
            CAPTURE(side);
            auto m = valid;
            m.side = static_cast<proto::fork_side>(side);
            CHECK(decode_as<proto::fork_reply>(payload_of(m)) == errc::malformed_message);
        }
    }
    SUBCASE("pid 0") {
        auto m = valid;
        m.pid = 0;
        CHECK(decode_as<proto::fork_reply>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("empty child_id") {
        auto m = valid;
        m.child_id.clear();
        CHECK(decode_as<proto::fork_reply>(payload_of(m)) == errc::malformed_message);
    }
}

TEST_CASE("messages: image_begin") {
    proto::image_begin valid;
    valid.origin_host = "node1";
    valid.pid = 31337;
    valid.socket_inode = 0x1122334455667788u;
    valid.stdio = {"pipe:[123]", "", "tty[88:5]"};
    valid.total_size = 145326;
    valid.flags = proto::image_begin::lazy_pages;
    valid.memory_size = 64u << 20;

    SUBCASE("round trip") {
        proto::image_begin out;
        REQUIRE_FALSE(proto::decode(payload_of(valid), out));
        CHECK(out.origin_host == valid.origin_host);
        CHECK(out.pid == valid.pid);
        CHECK(out.socket_inode == valid.socket_inode);
        CHECK(out.stdio == valid.stdio);
        CHECK(out.total_size == valid.total_size);
        CHECK(out.flags == proto::image_begin::lazy_pages);
        CHECK(out.memory_size == valid.memory_size);
    }
    SUBCASE("memory to follow without lazy pages") {
        auto m = valid;
        m.flags = 0;
        CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
        m.memory_size = 0;
        CHECK_FALSE(decode_as<proto::image_begin>(payload_of(m)));
    }
    SUBCASE("unknown flags") {
        auto m = valid;
        m.flags = 2;
        CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("exact length") { check_exact_length_required(valid); }
    SUBCASE("pid 0") {
        auto m = valid;
        m.pid = 0;
        CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("zero inode") {
        auto m = valid;
        m.socket_inode = 0;
        CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("origin_host over the limit") {
        auto m = valid;
        m.origin_host = over_limit;
        CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("each stdio key over the limit") {
        for (std::size_t i = 0; i < 3; ++i) {
            CAPTURE(i);
            auto m = valid;
            m.stdio[i] = over_limit;
            CHECK(decode_as<proto::image_begin>(payload_of(m)) == errc::malformed_message);
            m.stdio[i] = at_limit;
            CHECK_FALSE(decode_as<proto::image_begin>(payload_of(m)));
        }
    }
}

TEST_CASE("messages: image_file") {
    SUBCASE("round trip") {
        const proto::image_file m{"pages-1.img", std::numeric_limits<std::uint64_t>::max()};
        proto::image_file out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.name == m.name);
        CHECK(out.size == m.size);
    }
    SUBCASE("exact length") { check_exact_length_required(proto::image_file{"core-1.img", 4096}); }
    SUBCASE("plain names are accepted") {
        using namespace std::string_literals;
        for (const std::string& name : {"a"s, "..."s, ".hidden"s, "a..b"s, "inventory.img"s, std::string(255, 'n')}) {
            CAPTURE(name.size());
            CHECK_FALSE(decode_as<proto::image_file>(payload_of(proto::image_file{name, 1})));
        }
    }
    SUBCASE("names that are not plain file names are refused") {
        using namespace std::string_literals;
        for (const std::string& name : {""s, "."s, ".."s, "a/b"s, "/"s, "/etc"s, "../x"s, "x/"s, "\0"s, "a\0b"s,
                                       "img\0"s, std::string(256, 'n'), std::string(proto::max_text, 'n')}) {
            CAPTURE(name.size());
            CHECK(decode_as<proto::image_file>(payload_of(proto::image_file{name, 1})) == errc::malformed_message);
        }
    }
}

TEST_CASE("messages: image_end") {
    SUBCASE("round trip: an empty payload") {
        CHECK(payload_of(proto::image_end{}).empty());
        CHECK_FALSE(decode_as<proto::image_end>(bytes{}));
    }
    SUBCASE("any payload byte is malformed") {
        CHECK(decode_as<proto::image_end>(bytes{0}) == errc::malformed_message);
        CHECK(decode_as<proto::image_end>(bytes{1, 2, 3}) == errc::malformed_message);
    }
}

TEST_CASE("messages: restored") {
    proto::restored valid;
    valid.child_id = "7f3a";
    valid.host = "node2";
    valid.pid = 77;

    SUBCASE("round trip") {
        proto::restored out;
        REQUIRE_FALSE(proto::decode(payload_of(valid), out));
        CHECK(out.child_id == valid.child_id);
        CHECK(out.host == valid.host);
        CHECK(out.pid == valid.pid);
    }
    SUBCASE("exact length") { check_exact_length_required(valid); }
    SUBCASE("child_id over the limit") {
        auto m = valid;
        m.child_id = over_limit;
        CHECK(decode_as<proto::restored>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("host over the limit") {
        auto m = valid;
        m.host = over_limit;
        CHECK(decode_as<proto::restored>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("empty child_id") {
        auto m = valid;
        m.child_id.clear();
        CHECK(decode_as<proto::restored>(payload_of(m)) == errc::malformed_message);
    }
    SUBCASE("pid 0") {
        auto m = valid;
        m.pid = 0;
        CHECK(decode_as<proto::restored>(payload_of(m)) == errc::malformed_message);
    }
}

TEST_CASE("messages: a string length beyond the payload is malformed and not a crash") {
    bytes p;
    wire_writer w(p);
    w.u32(0xFFFFFFF0u);  // endpoint length, far past the end
    w.u64(1);
    CHECK(decode_as<proto::fork_request>(p) == errc::malformed_message);
}

}  // TEST_SUITE
