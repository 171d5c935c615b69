// CRIU's protobuf image files (images/magic.h): two magics, then each entry
// as a 32-bit little-endian length and the message. For images the sending
// agent reads back from its own dump; the receiver checks the images it gets
// with its gate (receive/image_gate.hpp) instead.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

inline constexpr std::uint32_t img_common_magic = 0x54564319;
// The largest image file read whole (as the image gate bounds files.img).
inline constexpr std::size_t max_entries_image = 64 << 20;

inline std::uint32_t u32le(const std::vector<unsigned char>& b, std::size_t at) {
    return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
           std::uint32_t(b[at + 3]) << 24;
}

// Calls `each(data, size)` for every entry of `image` (magic `magic`), in
// order; `each` returns why an entry is wrong, or "". Returns why the image
// is not as CRIU writes it (`name` in the text), or "".
template <typename Each>
std::string for_each_entry(const std::vector<unsigned char>& image, std::uint32_t magic, const char* name,
                           Each each) {
    if (image.size() < 8 || u32le(image, 0) != img_common_magic || u32le(image, 4) != magic)
        return fmt::format("{} does not start as CRIU writes it", name);
    for (std::size_t at = 8; at < image.size();) {
        if (image.size() - at < 4) return fmt::format("{} is truncated", name);
        std::size_t size = u32le(image, at);
        at += 4;
        if (size > image.size() - at) return fmt::format("{} is truncated", name);
        if (auto why = each(image.data() + at, size); !why.empty()) return fmt::format("{}: {}", name, why);
        at += size;
    }
    return {};
}

// The whole of the regular file `name` in `dir_fd` (never through a link), at
// most max_entries_image bytes; empty if there is none; nullopt if it cannot
// be read.
std::optional<std::vector<unsigned char>> read_image_file(int dir_fd, const char* name);

}  // namespace rfork::agent
