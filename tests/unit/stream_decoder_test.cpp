// stream_decoder: splitting a byte stream, however it arrives, into a
// handshake and frames, with every check of the protocol applied.
#include "test_support.hpp"

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace proto = rfork::protocol;
using proto::message_type;
using result = proto::stream_decoder::result;
using rfork::errc;
using rfork_test::bytes;
using rfork_test::to_bytes;

namespace {

struct event {
    result what{};
    message_type type{};
    bytes payload;
    std::size_t fed = 0;  // bytes fed when the event came out
};

// Calls next() until it needs more or fails; records what came out.
void drain(proto::stream_decoder& d, std::vector<event>& events, std::size_t fed) {
    for (;;) {
        auto r = d.next();
        if (r == result::need_more) return;
        event e{r, {}, {}, fed};
        if (r == result::frame) {
            e.type = d.last_frame().type;
            e.payload = d.last_frame().payload;
        }
        events.push_back(e);
        if (r == result::error) return;
    }
}

void append(bytes& stream, std::span<const unsigned char> more) { stream.insert(stream.end(), more.begin(), more.end()); }

struct sample_stream {
    bytes data;
    std::vector<std::size_t> ends;  // offset just past each item
    std::vector<bytes> frames;      // the frames, header included
};

// A sender's side of a transfer: handshake, image_begin, image_file,
// image_data, an empty image_data, image_end.
sample_stream make_sample() {
    sample_stream s;
    append(s.data, proto::encode_handshake(proto::role::sender));
    s.ends.push_back(s.data.size());

    proto::image_begin begin;
    begin.origin_host = "node1";
    begin.pid = 100;
    begin.socket_inode = 200;
    s.frames.push_back(proto::encode(begin));
    s.frames.push_back(proto::encode(proto::image_file{"pages-1.img", 5}));
    s.frames.push_back(proto::encode_frame(message_type::image_data, to_bytes("12345")));
    s.frames.push_back(proto::encode_frame(message_type::image_data, {}));
    s.frames.push_back(proto::encode(proto::image_end{}));
    for (auto& f : s.frames) {
        append(s.data, f);
        s.ends.push_back(s.data.size());
    }
    return s;
}

bytes payload_of_frame(const bytes& frame) { return bytes(frame.begin() + proto::frame_header_size, frame.end()); }

}  // namespace

TEST_SUITE("unit.stream_decoder") {

TEST_CASE("stream_decoder: one byte at a time yields the handshake then each frame in order") {
    const auto s = make_sample();
    proto::stream_decoder d(true);
    std::vector<event> events;
    for (std::size_t i = 0; i < s.data.size(); ++i) {
        d.feed(std::span(s.data).subspan(i, 1));
        drain(d, events, i + 1);
    }
    REQUIRE(events.size() == 1 + s.frames.size());

    // Each item comes out exactly when its last byte arrives.
    CHECK(events[0].what == result::handshake);
    CHECK(events[0].fed == s.ends[0]);
    CHECK(d.peer().who == proto::role::sender);
    CHECK(d.peer().version == proto::protocol_version);
    for (std::size_t i = 0; i < s.frames.size(); ++i) {
        CAPTURE(i);
        const auto& e = events[i + 1];
        CHECK(e.what == result::frame);
        CHECK(e.fed == s.ends[i + 1]);
        CHECK(static_cast<unsigned>(e.type) == ((unsigned(s.frames[i][0]) << 8) | s.frames[i][1]));
        CHECK(e.payload == payload_of_frame(s.frames[i]));
    }
    CHECK_FALSE(d.finish());
    CHECK_FALSE(d.error());
}

TEST_CASE("stream_decoder: the frames decode as the messages sent") {
    const auto s = make_sample();
    proto::stream_decoder d(true);
    d.feed(s.data);
    REQUIRE(d.next() == result::handshake);

    REQUIRE(d.next() == result::frame);
    REQUIRE(d.last_frame().type == message_type::image_begin);
    proto::image_begin begin;
    REQUIRE_FALSE(proto::decode(d.last_frame().payload, begin));
    CHECK(begin.origin_host == "node1");
    CHECK(begin.pid == 100);

    REQUIRE(d.next() == result::frame);
    REQUIRE(d.last_frame().type == message_type::image_file);
    proto::image_file file;
    REQUIRE_FALSE(proto::decode(d.last_frame().payload, file));
    CHECK(file.name == "pages-1.img");
    CHECK(file.size == 5);
}

TEST_CASE("stream_decoder: several frames in one feed") {
    bytes stream;
    append(stream, proto::encode_frame(message_type::restored, to_bytes("first")));
    append(stream, proto::encode_frame(message_type::image_data, to_bytes("second")));
    append(stream, proto::encode_frame(message_type::image_end, {}));

    proto::stream_decoder d(false);
    d.feed(stream);
    std::vector<event> events;
    drain(d, events, stream.size());
    REQUIRE(events.size() == 3);
    CHECK(events[0].what == result::frame);
    CHECK(events[0].type == message_type::restored);
    CHECK(events[0].payload == to_bytes("first"));
    CHECK(events[1].what == result::frame);
    CHECK(events[1].type == message_type::image_data);
    CHECK(events[1].payload == to_bytes("second"));
    CHECK(events[2].what == result::frame);
    CHECK(events[2].type == message_type::image_end);
    CHECK(events[2].payload.empty());
    CHECK(d.next() == result::need_more);
    CHECK_FALSE(d.finish());
}

TEST_CASE("stream_decoder: a feed that ends inside a frame keeps the rest for the next feed") {
    const auto a = proto::encode_frame(message_type::image_data, to_bytes("aaaa"));
    const auto b = proto::encode_frame(message_type::image_data, to_bytes("bbbbbbbb"));
    bytes stream = a;
    append(stream, b);
    const std::size_t split = a.size() + 5;  // inside b's header

    proto::stream_decoder d(false);
    d.feed(std::span(stream).first(split));
    REQUIRE(d.next() == result::frame);
    CHECK(d.last_frame().payload == to_bytes("aaaa"));
    CHECK(d.next() == result::need_more);
    d.feed(std::span(stream).subspan(split));
    REQUIRE(d.next() == result::frame);
    CHECK(d.last_frame().payload == to_bytes("bbbbbbbb"));
    CHECK(d.next() == result::need_more);
}

TEST_CASE("stream_decoder: finish") {
    const auto frame = proto::encode_frame(message_type::image_data, to_bytes("payload"));

    SUBCASE("a clean end reports nothing") {
        proto::stream_decoder d(false);
        d.feed(frame);
        REQUIRE(d.next() == result::frame);
        CHECK_FALSE(d.finish());
    }
    SUBCASE("an empty stream reports nothing") {
        proto::stream_decoder d(false);
        CHECK_FALSE(d.finish());
    }
    SUBCASE("a partial frame header is truncated") {
        proto::stream_decoder d(false);
        d.feed(std::span(frame).first(5));
        REQUIRE(d.next() == result::need_more);
        CHECK(d.finish() == errc::truncated);
        CHECK(d.error() == errc::truncated);
    }
    SUBCASE("a partial payload is truncated") {
        proto::stream_decoder d(false);
        d.feed(std::span(frame).first(frame.size() - 1));
        REQUIRE(d.next() == result::need_more);
        CHECK(d.finish() == errc::truncated);
    }
    SUBCASE("a partial frame after whole ones is truncated") {
        proto::stream_decoder d(false);
        d.feed(frame);
        d.feed(std::span(frame).first(proto::frame_header_size + 2));
        REQUIRE(d.next() == result::frame);
        REQUIRE(d.next() == result::need_more);
        CHECK(d.finish() == errc::truncated);
    }
    SUBCASE("a partial handshake is truncated") {
        proto::stream_decoder d(true);
        const auto hs = proto::encode_handshake(proto::role::agent);
        d.feed(std::span(hs).first(proto::handshake_size - 1));
        REQUIRE(d.next() == result::need_more);
        CHECK(d.finish() == errc::truncated);
    }
    SUBCASE("after an error, finish reports that error") {
        proto::stream_decoder d(false);
        d.feed(rfork_test::make_frame(2, 1, 0, {}));
        REQUIRE(d.next() == result::error);
        CHECK(d.finish() == errc::bad_header);
    }
}

TEST_CASE("stream_decoder: after an error it stays in error") {
    SUBCASE("an error found by next()") {
        proto::stream_decoder d(true);
        d.feed(to_bytes("GET / HTTP/1.1\r\n"));
        REQUIRE(d.next() == result::error);
        CHECK(d.error() == errc::bad_magic);

        // Valid bytes afterwards change nothing.
        d.feed(proto::encode_handshake(proto::role::program));
        d.feed(proto::encode_frame(message_type::image_end, {}));
        CHECK(d.next() == result::error);
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::bad_magic);
        CHECK(d.finish() == errc::bad_magic);
    }
    SUBCASE("truncated, found by finish()") {
        const auto frame = proto::encode_frame(message_type::image_data, to_bytes("abcdef"));
        proto::stream_decoder d(false);
        d.feed(std::span(frame).first(frame.size() - 2));
        REQUIRE(d.next() == result::need_more);
        REQUIRE(d.finish() == errc::truncated);

        // The rest of the frame arriving after the end does not revive it.
        d.feed(std::span(frame).last(2));
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::truncated);
    }
}

TEST_CASE("stream_decoder: an oversize length is refused as soon as the header is in") {
    constexpr std::uint32_t limit = 1000;
    const auto header = rfork_test::make_frame(18, 0, limit + 1, {});  // header only, no payload
    REQUIRE(header.size() == proto::frame_header_size);

    proto::stream_decoder d(false, limit);
    d.feed(std::span(header).first(proto::frame_header_size - 1));
    CHECK(d.next() == result::need_more);
    CHECK_FALSE(d.error());
    d.feed(std::span(header).last(1));
    CHECK(d.next() == result::error);
    CHECK(d.error() == errc::frame_too_large);
}

TEST_CASE("stream_decoder: a frame at the decoder's limit is accepted") {
    constexpr std::uint32_t limit = 1000;
    proto::stream_decoder d(false, limit);
    d.feed(proto::encode_frame(message_type::image_data, bytes(limit, 7)));
    REQUIRE(d.next() == result::frame);
    CHECK(d.last_frame().payload.size() == limit);
}

TEST_CASE("stream_decoder: each protocol error surfaces with its code") {
    SUBCASE("a handshake of another version; peer() carries it") {
        proto::stream_decoder d(true);
        d.feed(proto::encode_handshake(proto::role::agent, 7));
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::unsupported_version);
        CHECK(d.peer().version == 7);
    }
    SUBCASE("a handshake with an unknown role") {
        proto::stream_decoder d(true);
        d.feed(proto::encode_handshake(static_cast<proto::role>(9)));
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::unknown_role);
    }
    SUBCASE("a frame with flags set") {
        proto::stream_decoder d(false);
        d.feed(rfork_test::make_frame(18, 0x0100, 1, to_bytes("x")));
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::bad_header);
    }
    SUBCASE("a corrupted frame after a good one") {
        auto bad = proto::encode_frame(message_type::image_data, to_bytes("abc"));
        bad.back() ^= 1;
        proto::stream_decoder d(false);
        d.feed(proto::encode_frame(message_type::image_data, to_bytes("good")));
        d.feed(bad);
        CHECK(d.next() == result::frame);
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::bad_checksum);
    }
    SUBCASE("a frame of an unknown type") {
        proto::stream_decoder d(false);
        d.feed(proto::encode_frame(static_cast<message_type>(99), to_bytes("abc")));
        CHECK(d.next() == result::error);
        CHECK(d.error() == errc::unexpected_message);
    }
}

TEST_CASE("stream_decoder: without a handshake expected a frame comes first") {
    proto::stream_decoder d(false);
    d.feed(proto::encode_frame(message_type::fork_reply, to_bytes("r")));
    CHECK(d.next() == result::frame);
    CHECK(d.last_frame().type == message_type::fork_reply);
}

}  // TEST_SUITE
