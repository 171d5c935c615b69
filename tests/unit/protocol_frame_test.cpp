// Frames: a 12-byte header (type, flags, length, CRC-32C) and a payload.
#include "test_support.hpp"

#include <rfork/detail/crc32c.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <span>
#include <system_error>

namespace proto = rfork::protocol;
using proto::message_type;
using rfork::errc;
using rfork_test::bytes;
using rfork_test::make_frame;
using rfork_test::reseal_frame;
using rfork_test::to_bytes;

namespace {

// Decodes a whole frame as a reader does: the header first, then the payload
// that the header announces (or what is there of it).
std::error_code decode_whole(std::span<const unsigned char> frame, proto::frame_header& h,
                             std::uint32_t limit = proto::max_frame_payload) {
    if (auto ec = proto::decode_frame_header(frame, h, limit)) return ec;
    auto payload = frame.subspan(proto::frame_header_size);
    return proto::check_frame(frame.first(proto::frame_header_size), h, payload);
}

std::error_code decode_whole(std::span<const unsigned char> frame,
                             std::uint32_t limit = proto::max_frame_payload) {
    proto::frame_header h;
    return decode_whole(frame, h, limit);
}

// Only the 12 header bytes, as a reader has them before it reads a payload.
std::error_code decode_header_only(std::span<const unsigned char> frame, std::uint32_t limit) {
    proto::frame_header h;
    return proto::decode_frame_header(frame.first(proto::frame_header_size), h, limit);
}

}  // namespace

TEST_SUITE("unit.frame") {

TEST_CASE("frame: encoding is byte-exact") {
    // CRC values checked against an independent bitwise CRC-32C.
    SUBCASE("empty payload") {
        const bytes want = {0x00, 0x13, 0x00, 0x00, 0, 0, 0, 0, 0xa8, 0x76, 0x3d, 0x74};
        CHECK(proto::encode_frame(message_type::image_end, {}) == want);
    }
    SUBCASE("three payload bytes") {
        const bytes want = {0x00, 0x12, 0x00, 0x00, 0, 0, 0, 3, 0x80, 0x29, 0xf4, 0xab, 'a', 'b', 'c'};
        CHECK(proto::encode_frame(message_type::image_data, to_bytes("abc")) == want);
    }
}

TEST_CASE("frame: the CRC covers header bytes 0..7 then the payload") {
    const auto payload = to_bytes("some payload bytes");
    const auto frame = proto::encode_frame(message_type::fork_request, payload);
    const auto covered = rfork_test::concat(std::span(frame).first(8), payload);
    CHECK(rfork_test::get_be32(frame, 8) == rfork::detail::crc32c(covered));
    CHECK(proto::frame_crc(std::span(frame).first(8), payload) == rfork::detail::crc32c(covered));
}

TEST_CASE("frame: round trip") {
    const auto payload = to_bytes("hello, frame");
    const auto frame = proto::encode_frame(message_type::restored, payload);
    REQUIRE(frame.size() == proto::frame_header_size + payload.size());

    proto::frame_header h;
    REQUIRE_FALSE(proto::decode_frame_header(frame, h));
    CHECK(h.type == message_type::restored);
    CHECK(h.length == payload.size());
    CHECK(h.crc == rfork_test::get_be32(frame, 8));

    auto got = std::span(frame).subspan(proto::frame_header_size);
    CHECK_FALSE(proto::check_frame(frame, h, got));
    CHECK(bytes(got.begin(), got.end()) == payload);
}

TEST_CASE("frame: round trip of every known type") {
    for (auto type : {message_type::error, message_type::fork_request, message_type::fork_reply,
                      message_type::image_begin, message_type::image_file, message_type::image_data,
                      message_type::image_end, message_type::restored}) {
        CAPTURE(type);
        const auto frame = proto::encode_frame(type, to_bytes("x"));
        proto::frame_header h;
        CHECK_FALSE(decode_whole(frame, h));
        CHECK(h.type == type);
    }
}

TEST_CASE("frame: zero-length payload") {
    const auto frame = proto::encode_frame(message_type::image_end, {});
    CHECK(frame.size() == proto::frame_header_size);
    proto::frame_header h;
    CHECK_FALSE(decode_whole(frame, h));
    CHECK(h.length == 0);
    CHECK(h.type == message_type::image_end);
}

TEST_CASE("frame: payload at the receiver's limit and one over") {
    constexpr std::uint32_t limit = 100;
    SUBCASE("at the limit") {
        const auto frame = proto::encode_frame(message_type::image_data, bytes(limit, 0x5A));
        CHECK_FALSE(decode_whole(frame, limit));
    }
    SUBCASE("one over, refused from the header alone") {
        const auto frame = proto::encode_frame(message_type::image_data, bytes(limit + 1, 0x5A));
        CHECK(decode_header_only(frame, limit) == errc::frame_too_large);
        CHECK(decode_whole(frame, limit) == errc::frame_too_large);
    }
    SUBCASE("a header announcing far more than is sent") {
        const auto frame = make_frame(18, 0, 0xFFFFFFFFu, {});
        CHECK(decode_header_only(frame, limit) == errc::frame_too_large);
    }
}

TEST_CASE("frame: max_frame_payload caps any receiver's limit") {
    constexpr auto unlimited = std::numeric_limits<std::uint32_t>::max();
    SUBCASE("exactly max_frame_payload is accepted") {
        const auto frame = proto::encode_frame(message_type::image_data, bytes(proto::max_frame_payload, 0xA5));
        proto::frame_header h;
        CHECK_FALSE(decode_whole(frame, h, unlimited));
        CHECK(h.length == proto::max_frame_payload);
    }
    SUBCASE("one byte more is refused from the header alone") {
        const auto header = make_frame(18, 0, proto::max_frame_payload + 1, {});
        CHECK(decode_header_only(header, unlimited) == errc::frame_too_large);
        CHECK(decode_header_only(header, proto::max_frame_payload) == errc::frame_too_large);
    }
}

TEST_CASE("frame: nonzero frame flags are a bad header") {
    for (unsigned flags : {0x0001u, 0x0100u, 0x8000u, 0xFFFFu}) {
        CAPTURE(flags);
        const auto frame = make_frame(2, static_cast<std::uint16_t>(flags), 3, to_bytes("abc"));
        CHECK(decode_header_only(frame, proto::max_frame_payload) == errc::bad_header);
    }
}

TEST_CASE("frame: a corrupted payload byte is a bad checksum") {
    const auto original = proto::encode_frame(message_type::image_data, to_bytes("0123456789"));
    for (std::size_t at = proto::frame_header_size; at < original.size(); ++at) {
        CAPTURE(at);
        auto frame = original;
        frame[at] ^= 0x01;
        CHECK(decode_whole(frame) == errc::bad_checksum);
    }
}

TEST_CASE("frame: a corrupted header byte is a bad checksum") {
    const auto original = proto::encode_frame(message_type::fork_request, to_bytes("payload"));
    SUBCASE("type turned into another known type") {
        auto frame = original;
        frame[1] = static_cast<unsigned char>(message_type::fork_reply);
        CHECK(decode_whole(frame) == errc::bad_checksum);
    }
    SUBCASE("type turned into an unknown type") {
        auto frame = original;
        frame[0] = 0x40;
        CHECK(decode_whole(frame) == errc::bad_checksum);
    }
    SUBCASE("any bit of the CRC field") {
        for (std::size_t bit = 0; bit < 32; ++bit) {
            CAPTURE(bit);
            auto frame = original;
            frame[8 + bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
            CHECK(decode_whole(frame) == errc::bad_checksum);
        }
    }
}

TEST_CASE("frame: an unknown type with a valid CRC is an unexpected message") {
    for (unsigned type : {0u, 4u, 15u, 28u, 0x1000u, 0xFFFFu}) {
        CAPTURE(type);
        auto frame = proto::encode_frame(static_cast<message_type>(type), to_bytes("abc"));
        proto::frame_header h;
        REQUIRE_FALSE(proto::decode_frame_header(frame, h));
        CHECK(decode_whole(frame) == errc::unexpected_message);
        // The same frame with a bad CRC is corruption, not a foreign type.
        frame.back() ^= 0x10;
        CHECK(decode_whole(frame) == errc::bad_checksum);
    }
}

TEST_CASE("frame: is_known lists exactly the message types") {
    for (unsigned t : {1u, 2u, 3u, 16u, 17u, 18u, 19u, 20u, 21u, 22u, 23u, 24u, 25u, 26u, 27u}) {
        CAPTURE(t);
        CHECK(proto::is_known(static_cast<message_type>(t)));
    }
    for (unsigned t : {0u, 4u, 5u, 15u, 28u, 64u, 256u, 0xFFFFu}) {
        CAPTURE(t);
        CHECK_FALSE(proto::is_known(static_cast<message_type>(t)));
    }
}

TEST_CASE("frame: truncated header") {
    const auto frame = proto::encode_frame(message_type::image_end, {});
    for (std::size_t n = 0; n < proto::frame_header_size; ++n) {
        CAPTURE(n);
        proto::frame_header h;
        CHECK(proto::decode_frame_header(std::span(frame).first(n), h) == errc::truncated);
    }
}

TEST_CASE("frame: truncated payload") {
    const auto frame = proto::encode_frame(message_type::image_data, to_bytes("abcdefgh"));
    for (std::size_t n = proto::frame_header_size; n < frame.size(); ++n) {
        CAPTURE(n);
        CHECK(decode_whole(std::span(frame).first(n)) == errc::truncated);
    }
    SUBCASE("a payload longer than announced is not accepted either") {
        auto longer = frame;
        longer.push_back('i');
        CHECK(decode_whole(longer) == errc::truncated);
    }
}

TEST_CASE("frame: reseal helper produces frames the decoder accepts") {
    // Guards the helper the other tests rely on to build sealed frames.
    auto frame = proto::encode_frame(message_type::image_data, to_bytes("abc"));
    frame.back() = 'z';
    REQUIRE(decode_whole(frame) == errc::bad_checksum);
    reseal_frame(frame);
    CHECK_FALSE(decode_whole(frame));
    CHECK(make_frame(18, 0, 3, to_bytes("abz")) == frame);
}

}  // TEST_SUITE
