// Big-endian field encoding for rfork's messages, with bounds-checked reading.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rfork::detail {

using bytes = std::vector<unsigned char>;

// Each field goes in with one resize and one memcpy of its finished bytes.
// Growing the vector a byte at a time (push_back, insert) let GCC 12 at -O3
// follow each reallocation and warn, wrongly, that it writes past the end
// (-Wstringop-overflow, -Warray-bounds) in every user's Release build.
class wire_writer {
public:
    explicit wire_writer(bytes& out) : out_(out) {}

    void u8(std::uint8_t v) { put<1>(v); }
    void u16(std::uint16_t v) { put<2>(v); }
    void u32(std::uint32_t v) { put<4>(v); }
    void u64(std::uint64_t v) { put<8>(v); }
    void raw(std::span<const unsigned char> data) { append(data.data(), data.size()); }
    // A string is its length (u32) and its bytes.
    void str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        append(s.data(), s.size());
    }

private:
    template <std::size_t width>
    void put(std::uint64_t v) {
        std::array<unsigned char, width> field{};
        for (std::size_t i = 0; i < width; ++i) field[i] = static_cast<unsigned char>(v >> (8 * (width - 1 - i)));
        append(field.data(), width);
    }
    void append(const void* data, std::size_t size) {
        if (size == 0) return;
        auto at = out_.size();
        out_.resize(at + size);
        std::memcpy(out_.data() + at, data, size);
    }
    bytes& out_;
};

// Reads fields in order; any read past the end or any over-long string makes
// the reader fail, and every later read returns zero values.
class wire_reader {
public:
    explicit wire_reader(std::span<const unsigned char> in) : in_(in) {}

    std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(get(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
    std::uint64_t u64() { return get(8); }
    std::string str(std::size_t max_length) {
        std::uint32_t n = u32();
        if (!ok_ || n > max_length || n > remaining()) return fail(), std::string{};
        std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
        pos_ += n;
        return s;
    }

    // Everything not read yet (a frame's raw tail).
    bytes rest() {
        bytes tail(in_.begin() + static_cast<std::ptrdiff_t>(pos_), in_.end());
        pos_ = in_.size();
        return tail;
    }

    bool ok() const { return ok_; }
    std::size_t remaining() const { return in_.size() - pos_; }
    // True when every byte was consumed and nothing failed.
    bool done() const { return ok_ && pos_ == in_.size(); }

private:
    void fail() { ok_ = false; }
    std::uint64_t get(std::size_t width) {
        if (!ok_ || remaining() < width) return fail(), 0;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < width; ++i) v = (v << 8) | in_[pos_ + i];
        pos_ += width;
        return v;
    }
    std::span<const unsigned char> in_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace rfork::detail
