// An image directory in one file, as make_image_seeds writes the image gate's
// seeds: for each file, its name's length (u16 LE), the name, its size (u32
// LE), its bytes. Shared by the fuzz target and the unit tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace rfork::test {

using image_bundle = std::map<std::string, std::vector<unsigned char>>;

// Nullopt if `data` is not a whole bundle.
inline std::optional<image_bundle> unbundle(std::span<const unsigned char> data) {
    image_bundle files;
    std::size_t at = 0;
    auto take = [&](std::size_t n) -> std::optional<std::span<const unsigned char>> {
        if (n > data.size() - at) return std::nullopt;
        auto part = data.subspan(at, n);
        at += n;
        return part;
    };
    while (at < data.size()) {
        auto name_size = take(2);
        if (!name_size) return std::nullopt;
        auto name = take(std::size_t((*name_size)[0]) | std::size_t((*name_size)[1]) << 8);
        auto size = name ? take(4) : std::nullopt;
        if (!size) return std::nullopt;
        auto& s = *size;
        auto contents = take(std::size_t(s[0]) | std::size_t(s[1]) << 8 | std::size_t(s[2]) << 16 |
                             std::size_t(s[3]) << 24);
        if (!contents) return std::nullopt;
        files[std::string(name->begin(), name->end())].assign(contents->begin(), contents->end());
    }
    return files;
}

}  // namespace rfork::test
