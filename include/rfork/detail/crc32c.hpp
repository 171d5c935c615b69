// CRC-32C (Castagnoli), the checksum of every handshake and frame.
// The SSE4.2 instruction computes it at memory speed; a table serves other CPUs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace rfork::detail {

inline constexpr std::uint32_t crc32c_polynomial = 0x82F63B78u;  // reflected

inline constexpr std::array<std::uint32_t, 256> crc32c_table = [] {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ crc32c_polynomial : c >> 1;
        table[i] = c;
    }
    return table;
}();

inline std::uint32_t crc32c_portable(std::uint32_t crc, const unsigned char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) crc = crc32c_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42(std::uint32_t crc,
                                                                    const unsigned char* p,
                                                                    std::size_t n) {
    std::uint64_t c = crc;
    for (; n >= 8; n -= 8, p += 8) {
        std::uint64_t word;
        std::memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
    }
    auto c32 = static_cast<std::uint32_t>(c);
    for (; n > 0; --n, ++p) c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32;
}
#endif

// Continues a CRC-32C over more bytes: crc32c(b, crc32c(a)) == crc32c(a + b).
inline std::uint32_t crc32c(std::span<const unsigned char> data, std::uint32_t previous = 0) {
    std::uint32_t crc = ~previous;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
    if (has_sse42) return ~crc32c_sse42(crc, data.data(), data.size());
#endif
    return ~crc32c_portable(crc, data.data(), data.size());
}

}  // namespace rfork::detail
