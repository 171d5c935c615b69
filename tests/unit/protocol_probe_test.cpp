// The probe (rfork-agent doctor --peer): a sending agent's question instead of
// an image, and the receiver's answer. Exact encodings, round trips, refusals.
#include "test_support.hpp"

#include <rfork/detail/wire.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <string>

namespace proto = rfork::protocol;
using rfork::errc;
using rfork::detail::wire_writer;
using rfork_test::bytes;
using rfork_test::check_exact_length_required;
using rfork_test::decode_as;
using rfork_test::payload_of;

TEST_SUITE("unit.messages") {

TEST_CASE("probe: both messages are known frame types of their own") {
    CHECK(proto::is_known(proto::message_type::probe_request));
    CHECK(proto::is_known(proto::message_type::probe_reply));
    CHECK(proto::encode(proto::probe_request{}) == proto::encode_frame(proto::message_type::probe_request, {}));
    const proto::probe_reply reply{"b", 2, ""};
    CHECK(proto::encode(reply) == proto::encode_frame(proto::message_type::probe_reply, payload_of(reply)));
}

TEST_CASE("probe: a probe_request is empty and nothing else") {
    CHECK(payload_of(proto::probe_request{}).empty());
    CHECK_FALSE(decode_as<proto::probe_request>(bytes{}));
    CHECK(decode_as<proto::probe_request>(bytes{0}) == errc::malformed_message);
}

TEST_CASE("probe: probe_reply") {
    SUBCASE("byte-exact and big-endian") {
        const bytes want = {0, 0, 0, 2, 'h', 'b', 0x01, 0x02, 0, 0, 0, 3, 'o', 'f', 'f'};
        CHECK(payload_of(proto::probe_reply{"hb", 0x0102, "off"}) == want);
    }
    SUBCASE("round trip") {
        const proto::probe_reply m{"node2", proto::protocol_version, "pipes of 3354624 bytes are refused"};
        proto::probe_reply out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.host == m.host);
        CHECK(out.version == m.version);
        CHECK(out.no_lazy_pages == m.no_lazy_pages);
    }
    SUBCASE("takes lazy pages: an empty reason") {
        proto::probe_reply out;
        out.no_lazy_pages = "stale";
        REQUIRE_FALSE(proto::decode(payload_of(proto::probe_reply{"b", 2, ""}), out));
        CHECK(out.no_lazy_pages.empty());
    }
    SUBCASE("exact length") { check_exact_length_required(proto::probe_reply{"b", 2, "--no-lazy-pages"}); }
    SUBCASE("version 0 is no version") {
        CHECK(decode_as<proto::probe_reply>(payload_of(proto::probe_reply{"b", 0, ""})) == errc::malformed_message);
    }
    SUBCASE("strings over the limit are refused on decode") {
        const std::string over(proto::max_text + 1, 'x');
        for (int field = 0; field < 2; ++field) {
            CAPTURE(field);
            bytes p;
            wire_writer w(p);
            w.str(field == 0 ? over : "b");
            w.u16(2);
            w.str(field == 1 ? over : "");
            CHECK(decode_as<proto::probe_reply>(p) == errc::malformed_message);
        }
    }
    SUBCASE("strings over the limit are cut to it on encode") {
        const std::string over(proto::max_text + 1, 'x');
        proto::probe_reply out;
        REQUIRE_FALSE(proto::decode(payload_of(proto::probe_reply{over, 2, over}), out));
        CHECK(out.host.size() == proto::max_text);
        CHECK(out.no_lazy_pages.size() == proto::max_text);
    }
}

}  // TEST_SUITE
