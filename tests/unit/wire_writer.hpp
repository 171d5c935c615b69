// Protobuf and CRIU image bytes written by hand, for tests that craft images.
#pragma once

#include <cstdint>
#include <vector>

namespace rfork::test {

using bytes = std::vector<unsigned char>;

inline void put_u32le(bytes& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

inline void put_varint(bytes& out, std::uint64_t v) {
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        out.push_back(static_cast<unsigned char>(c | (v ? 0x80 : 0)));
    } while (v);
}

// A varint field: its key (wire type 0), then its value.
inline void put_varint_field(bytes& out, std::uint32_t number, std::uint64_t value) {
    put_varint(out, number << 3);
    put_varint(out, value);
}

}  // namespace rfork::test
