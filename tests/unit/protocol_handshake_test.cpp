// The 16-byte handshake: layout, round trip, and every way it can be refused.
#include "test_support.hpp"

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <span>
#include <system_error>

namespace proto = rfork::protocol;
using rfork::errc;
using rfork_test::bytes;
using rfork_test::reseal_handshake;
using rfork_test::to_bytes;

namespace {

std::error_code decode(std::span<const unsigned char> in) {
    proto::handshake out;
    return proto::decode_handshake(in, out);
}

}  // namespace

TEST_SUITE("unit.handshake") {

TEST_CASE("handshake: constants match the documented layout") {
    CHECK(proto::handshake_size == 16);
    CHECK(proto::protocol_version == 4);
    CHECK(to_bytes(proto::magic) == to_bytes("RFRK"));
    CHECK(static_cast<int>(proto::role::program) == 1);
    CHECK(static_cast<int>(proto::role::sender) == 2);
    CHECK(static_cast<int>(proto::role::agent) == 3);
}

TEST_CASE("handshake: encoding is byte-exact") {
    // CRC values checked against an independent bitwise CRC-32C.
    SUBCASE("program") {
        const bytes want = {'R', 'F', 'R', 'K', 0x00, 0x04, 0x01, 0x00, 0, 0, 0, 0, 0x23, 0x87, 0x06, 0x6c};
        CHECK(to_bytes(proto::encode_handshake(proto::role::program)) == want);
    }
    SUBCASE("sender") {
        const bytes want = {'R', 'F', 'R', 'K', 0x00, 0x04, 0x02, 0x00, 0, 0, 0, 0, 0x17, 0x3b, 0xcd, 0xb6};
        CHECK(to_bytes(proto::encode_handshake(proto::role::sender)) == want);
    }
    SUBCASE("agent") {
        const bytes want = {'R', 'F', 'R', 'K', 0x00, 0x04, 0x03, 0x00, 0, 0, 0, 0, 0xf8, 0x0b, 0xa6, 0xaf};
        CHECK(to_bytes(proto::encode_handshake(proto::role::agent)) == want);
    }
    SUBCASE("another version is written big-endian") {
        auto hs = proto::encode_handshake(proto::role::agent, 0x1234);
        CHECK(hs[4] == 0x12);
        CHECK(hs[5] == 0x34);
    }
}

TEST_CASE("handshake: round trip for each role") {
    // Start `out` with a different role and version so a decoder that does not
    // write them is caught.
    const std::array<proto::role, 3> roles = {proto::role::program, proto::role::sender, proto::role::agent};
    for (std::size_t i = 0; i < roles.size(); ++i) {
        CAPTURE(i);
        auto hs = proto::encode_handshake(roles[i]);
        proto::handshake out;
        out.version = 0;
        out.who = roles[(i + 1) % roles.size()];
        REQUIRE_FALSE(proto::decode_handshake(hs, out));
        CHECK(out.who == roles[i]);
        CHECK(out.version == proto::protocol_version);
    }
}

TEST_CASE("handshake: bytes after the first 16 are not read") {
    auto in = to_bytes(proto::encode_handshake(proto::role::sender));
    in.push_back(0xFF);
    in.push_back(0x00);
    proto::handshake out;
    CHECK_FALSE(proto::decode_handshake(in, out));
    CHECK(out.who == proto::role::sender);
}

TEST_CASE("handshake: bad magic") {
    SUBCASE("each magic byte changed, CRC recomputed") {
        for (std::size_t i = 0; i < 4; ++i) {
            CAPTURE(i);
            auto hs = proto::encode_handshake(proto::role::program);
            hs[i] ^= 0x20;  // "rFRK", "RfRK", ...
            reseal_handshake(hs);
            CHECK(decode(hs) == errc::bad_magic);
        }
    }
    SUBCASE("each magic byte changed, CRC left stale") {
        for (std::size_t i = 0; i < 4; ++i) {
            CAPTURE(i);
            auto hs = proto::encode_handshake(proto::role::program);
            hs[i] = 0;
            CHECK(decode(hs) == errc::bad_magic);
        }
    }
    SUBCASE("another protocol") {
        CHECK(decode(to_bytes("GET / HTTP/1.1\r\n")) == errc::bad_magic);
        CHECK(decode(to_bytes("SSH-2.0-OpenSSH_")) == errc::bad_magic);
    }
}

TEST_CASE("handshake: unsupported version carries the peer's version") {
    for (std::uint16_t version : {std::uint16_t{0}, std::uint16_t{1}, std::uint16_t{2}, std::uint16_t{0x0100}, std::uint16_t{0xFFFF}}) {
        CAPTURE(version);
        auto hs = proto::encode_handshake(proto::role::agent, version);
        proto::handshake out;
        CHECK(proto::decode_handshake(hs, out) == errc::unsupported_version);
        CHECK(out.version == version);
    }
}

TEST_CASE("handshake: unknown role") {
    for (unsigned value = 0; value < 256; ++value) {
        if (value >= 1 && value <= 3) continue;
        CAPTURE(value);
        auto hs = proto::encode_handshake(static_cast<proto::role>(value));
        CHECK(decode(hs) == errc::unknown_role);
    }
}

TEST_CASE("handshake: nonzero flags or reserved bits") {
    // Byte 7 is the flags, bytes 8..11 the reserved word. A sealed handshake
    // with one of them set is bad_header; an unsealed one is bad_checksum.
    bool reseal = false;
    SUBCASE("with the CRC recomputed: bad_header") { reseal = true; }
    SUBCASE("with the CRC left stale: bad_checksum") { reseal = false; }
    for (std::size_t at = 7; at < 12; ++at) {
        for (unsigned bit : {0x01u, 0x80u}) {
            CAPTURE(at);
            CAPTURE(bit);
            auto hs = proto::encode_handshake(proto::role::sender);
            hs[at] = static_cast<unsigned char>(bit);
            if (reseal) reseal_handshake(hs);
            CHECK(decode(hs) == (reseal ? errc::bad_header : errc::bad_checksum));
        }
    }
}

TEST_CASE("handshake: any flipped CRC bit is a bad checksum") {
    for (std::size_t bit = 0; bit < 32; ++bit) {
        CAPTURE(bit);
        auto hs = proto::encode_handshake(proto::role::program);
        hs[12 + bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
        CHECK(decode(hs) == errc::bad_checksum);
    }
}

TEST_CASE("handshake: the CRC is checked before the fields it covers") {
    // A corrupted version or role byte must read as corruption, not as a
    // foreign version or role.
    SUBCASE("version") {
        auto hs = proto::encode_handshake(proto::role::program);
        hs[5] ^= 0x02;
        CHECK(decode(hs) == errc::bad_checksum);
    }
    SUBCASE("role") {
        auto hs = proto::encode_handshake(proto::role::program);
        hs[6] = 0x09;
        CHECK(decode(hs) == errc::bad_checksum);
    }
}

TEST_CASE("handshake: fewer than 16 bytes is truncated") {
    const auto hs = proto::encode_handshake(proto::role::agent);
    for (std::size_t n = 0; n < proto::handshake_size; ++n) {
        CAPTURE(n);
        CHECK(decode(std::span(hs).first(n)) == errc::truncated);
    }
}

}  // TEST_SUITE
