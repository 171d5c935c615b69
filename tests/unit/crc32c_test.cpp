// CRC-32C: standard vectors, continuation, and agreement of the SSE4.2 path
// with the portable table on many lengths and alignments.
#include <rfork/detail/crc32c.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

using rfork::detail::crc32c;
using rfork::detail::crc32c_portable;

namespace {

std::span<const unsigned char> as_bytes(std::string_view s) {
    return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

std::vector<unsigned char> random_bytes(std::size_t n, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::vector<unsigned char> out(n);
    for (auto& b : out) b = static_cast<unsigned char>(gen());
    return out;
}

// The portable table code, with the same pre- and post-inversion as crc32c().
std::uint32_t portable(std::span<const unsigned char> data, std::uint32_t previous = 0) {
    return ~crc32c_portable(~previous, data.data(), data.size());
}

}  // namespace

TEST_SUITE("unit.crc32c") {

TEST_CASE("crc32c: standard check value") {
    CHECK(crc32c(as_bytes("123456789")) == 0xE3069283u);
    CHECK(portable(as_bytes("123456789")) == 0xE3069283u);
}

TEST_CASE("crc32c: RFC 3720 (iSCSI) test vectors") {
    std::vector<unsigned char> data(32);
    SUBCASE("32 zero bytes") {
        CHECK(crc32c(data) == 0x8A9136AAu);
    }
    SUBCASE("32 bytes of 0xFF") {
        for (auto& b : data) b = 0xFF;
        CHECK(crc32c(data) == 0x62A8AB43u);
    }
    SUBCASE("32 incrementing bytes") {
        for (std::size_t i = 0; i < 32; ++i) data[i] = static_cast<unsigned char>(i);
        CHECK(crc32c(data) == 0x46DD794Eu);
    }
    SUBCASE("32 decrementing bytes") {
        for (std::size_t i = 0; i < 32; ++i) data[i] = static_cast<unsigned char>(31 - i);
        CHECK(crc32c(data) == 0x113FDB5Cu);
    }
}

TEST_CASE("crc32c: the table is Castagnoli's") {
    CHECK(rfork::detail::crc32c_table[0] == 0u);
    CHECK(rfork::detail::crc32c_table[1] == 0xF26B8303u);
    CHECK(rfork::detail::crc32c_table[128] == 0x82F63B78u);
    CHECK(rfork::detail::crc32c_table[255] == 0xAD7D5351u);
}

TEST_CASE("crc32c: empty input") {
    CHECK(crc32c({}) == 0u);
    // Continuing over nothing changes nothing.
    CHECK(crc32c({}, 0xE3069283u) == 0xE3069283u);
    CHECK(crc32c({}, 0x12345678u) == 0x12345678u);
}

TEST_CASE("crc32c: incremental: crc of a+b equals crc32c(b) continued from crc32c(a)") {
    SUBCASE("the check string split everywhere") {
        const auto all = as_bytes("123456789");
        for (std::size_t cut = 0; cut <= all.size(); ++cut) {
            CAPTURE(cut);
            CHECK(crc32c(all.subspan(cut), crc32c(all.first(cut))) == 0xE3069283u);
        }
    }
    SUBCASE("random buffers split at random points, in three pieces") {
        std::mt19937 gen(12345);
        for (int round = 0; round < 200; ++round) {
            const auto data = random_bytes(std::uniform_int_distribution<std::size_t>(0, 300)(gen),
                                           static_cast<std::uint32_t>(round));
            std::uniform_int_distribution<std::size_t> pick(0, data.size());
            std::size_t a = pick(gen), b = pick(gen);
            if (a > b) std::swap(a, b);
            const std::span<const unsigned char> all(data);
            CAPTURE(data.size());
            CAPTURE(a);
            CAPTURE(b);
            const auto whole = crc32c(all);
            CHECK(crc32c(all.subspan(b), crc32c(all.subspan(a, b - a), crc32c(all.first(a)))) == whole);
        }
    }
}

TEST_CASE("crc32c: a change of any single bit changes the CRC") {
    auto data = random_bytes(64, 7);
    const auto original = crc32c(data);
    for (std::size_t bit = 0; bit < data.size() * 8; ++bit) {
        CAPTURE(bit);
        data[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
        CHECK(crc32c(data) != original);
        data[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    }
}

TEST_CASE("crc32c: the dispatching crc32c agrees with crc32c_portable") {
    // Whatever path crc32c() takes on this CPU.
    const auto buffer = random_bytes(1000 + 8, 1);
    for (std::size_t offset = 0; offset < 8; ++offset) {
        for (std::size_t n = 0; n <= 1000; ++n) {
            const std::span<const unsigned char> data(buffer.data() + offset, n);
            if (crc32c(data) != portable(data)) {
                CAPTURE(offset);
                CAPTURE(n);
                FAIL_CHECK("crc32c and crc32c_portable disagree");
            }
        }
    }
    for (std::size_t n : {std::size_t{1} << 20, (std::size_t{3} << 20) + 5}) {
        const auto big = random_bytes(n + 3, static_cast<std::uint32_t>(n));
        for (std::size_t offset : {0u, 1u, 3u}) {
            CAPTURE(n);
            CAPTURE(offset);
            const std::span<const unsigned char> data(big.data() + offset, n);
            CHECK(crc32c(data) == portable(data));
            CHECK(crc32c(data, 0xDEADBEEFu) == portable(data, 0xDEADBEEFu));
        }
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
TEST_CASE("crc32c: the SSE4.2 path agrees with crc32c_portable") {
    if (!__builtin_cpu_supports("sse4.2")) {
        MESSAGE("this CPU has no SSE4.2: only the portable path runs here");
        return;
    }
    const auto buffer = random_bytes(1000 + 8, 2);
    std::mt19937 gen(99);
    for (std::size_t offset = 0; offset < 8; ++offset) {
        for (std::size_t n = 0; n <= 1000; ++n) {
            const auto state = static_cast<std::uint32_t>(gen());  // any running state, not only ~0
            const unsigned char* p = buffer.data() + offset;
            if (rfork::detail::crc32c_sse42(state, p, n) != crc32c_portable(state, p, n)) {
                CAPTURE(offset);
                CAPTURE(n);
                CAPTURE(state);
                FAIL_CHECK("crc32c_sse42 and crc32c_portable disagree");
            }
        }
    }
    for (std::size_t n : {std::size_t{1} << 20, (std::size_t{2} << 20) + 7}) {
        const auto big = random_bytes(n + 5, static_cast<std::uint32_t>(n) + 1);
        for (std::size_t offset : {0u, 5u}) {
            CAPTURE(n);
            CAPTURE(offset);
            const unsigned char* p = big.data() + offset;
            CHECK(rfork::detail::crc32c_sse42(0xFFFFFFFFu, p, n) == crc32c_portable(0xFFFFFFFFu, p, n));
        }
    }
}
#endif

}  // TEST_SUITE
