// Helpers shared by the unit tests: readable error codes, byte buffers, big-endian fields, and
// re-sealing a handshake or frame (recomputing its CRC) after a test changed it.
#pragma once

#include <rfork/detail/crc32c.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

// A failed CHECK on an error_code prints "rfork:64 (not the rfork protocol (bad magic))".
template <>
struct doctest::StringMaker<std::error_code> {
    static doctest::String convert(const std::error_code& ec) {
        if (!ec) return "no error";
        const std::string text =
            std::string(ec.category().name()) + ":" + std::to_string(ec.value()) + " (" + ec.message() + ")";
        return doctest::String(text.c_str());
    }
};

namespace rfork_test {

// A test that needs root (mount namespaces, the file cache, another user's
// rights): without it the test process exits 77, which CTest reports as
// skipped; under CI=true it fails instead, so CI always runs it.
inline void require_root(const char* why) {
    if (::geteuid() == 0) return;
    const char* ci = std::getenv("CI");
    if (ci && std::string_view(ci) == "true") FAIL("not root under CI: " << why);
    std::printf("SKIPPED: %s needs root\n", why);
    std::exit(77);
}

using rfork::detail::bytes;

inline bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

template <std::size_t N>
bytes to_bytes(const std::array<unsigned char, N>& a) {
    return bytes(a.begin(), a.end());
}

inline bytes concat(std::span<const unsigned char> a, std::span<const unsigned char> b) {
    bytes out(a.begin(), a.end());
    out.insert(out.end(), b.begin(), b.end());
    return out;
}

inline void put_be16(std::span<unsigned char> b, std::size_t at, std::uint16_t v) {
    b[at] = static_cast<unsigned char>(v >> 8);
    b[at + 1] = static_cast<unsigned char>(v);
}

inline void put_be32(std::span<unsigned char> b, std::size_t at, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) b[at + i] = static_cast<unsigned char>(v >> (24 - 8 * i));
}

inline std::uint32_t get_be32(std::span<const unsigned char> b, std::size_t at) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | b[at + i];
    return v;
}

// A handshake's CRC covers bytes 0..11 and sits in bytes 12..15.
inline void reseal_handshake(std::span<unsigned char> hs) {
    put_be32(hs, 12, rfork::detail::crc32c(hs.first(12)));
}

// A frame's CRC covers header bytes 0..7 followed by the payload. Computed here
// over one concatenated buffer, independently of protocol::frame_crc.
inline void reseal_frame(std::span<unsigned char> frame) {
    auto covered = concat(frame.first(8), frame.subspan(rfork::protocol::frame_header_size));
    put_be32(frame, 8, rfork::detail::crc32c(covered));
}

// A frame built field by field, with a correct CRC: for headers that
// encode_frame never writes (flags set, a length that disagrees with the payload).
inline bytes make_frame(std::uint16_t type, std::uint16_t flags, std::uint32_t length,
                        std::span<const unsigned char> payload) {
    bytes f(rfork::protocol::frame_header_size, 0);
    put_be16(f, 0, type);
    put_be16(f, 2, flags);
    put_be32(f, 4, length);
    f.insert(f.end(), payload.begin(), payload.end());
    reseal_frame(f);
    return f;
}

// A message's payload, as its encode writes it.
template <typename Message>
bytes payload_of(const Message& m) {
    bytes p;
    rfork::detail::wire_writer w(p);
    m.encode(w);
    return p;
}

template <typename Message>
std::error_code decode_as(std::span<const unsigned char> payload) {
    Message out;
    return rfork::protocol::decode(payload, out);
}

// Whatever the message, a byte too many or any byte too few is malformed.
template <typename Message>
void check_exact_length_required(const Message& valid) {
    const auto payload = payload_of(valid);
    REQUIRE_FALSE(decode_as<Message>(payload));

    auto longer = payload;
    longer.push_back(0);
    CHECK(decode_as<Message>(longer) == rfork::errc::malformed_message);

    for (std::size_t n = 0; n < payload.size(); ++n) {
        CAPTURE(n);
        CHECK(decode_as<Message>(std::span(payload).first(n)) == rfork::errc::malformed_message);
    }
}

}  // namespace rfork_test
