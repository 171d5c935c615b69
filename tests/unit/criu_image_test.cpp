// The agent's one edit of a CRIU image: external terminals lose their session.
#include "../../agent/criu_image.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using rfork::agent::clear_external_terminal_sessions;
using bytes = std::vector<unsigned char>;

namespace {

void u32le(bytes& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

void varint(bytes& out, std::uint64_t v) {
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        out.push_back(static_cast<unsigned char>(c | (v ? 0x80 : 0)));
    } while (v);
}

void varint_field(bytes& out, std::uint32_t number, std::uint64_t value) {
    varint(out, number << 3);
    varint(out, value);
}

// A tty_info_entry as CRIU writes it: id, type, locked, exclusive,
// packet_mode, sid, pgrp, rdev, then a length-delimited termios.
bytes tty_entry(std::uint32_t id, std::uint32_t type, std::uint32_t sid, std::uint32_t pgrp) {
    bytes e;
    varint_field(e, 1, id);
    varint_field(e, 2, type);
    varint_field(e, 3, 0);
    varint_field(e, 4, 0);
    varint_field(e, 5, 0);
    varint_field(e, 6, sid);
    varint_field(e, 7, pgrp);
    varint_field(e, 8, 0x8800);
    varint(e, (9 << 3) | 2);  // termios: bytes kept as they are
    varint(e, 3);
    e.insert(e.end(), {0x08, 0x96, 0x01});
    return e;
}

bytes image_of(const std::vector<bytes>& entries) {
    bytes image;
    u32le(image, 0x54564319);  // IMG_COMMON_MAGIC
    u32le(image, 0x59453036);  // TTY_INFO_MAGIC
    for (auto& e : entries) {
        u32le(image, static_cast<std::uint32_t>(e.size()));
        image.insert(image.end(), e.begin(), e.end());
    }
    return image;
}

constexpr std::uint32_t ext_tty = 5, pty = 3;

}  // namespace

TEST_SUITE("unit.criu_image") {
    TEST_CASE("an external terminal loses its session and process group and nothing else changes") {
        auto image = image_of({tty_entry(0x12, ext_tty, 13229, 13229)});
        auto edited = clear_external_terminal_sessions(image);
        REQUIRE(edited);
        CHECK(*edited == image_of({tty_entry(0x12, ext_tty, 0, 0)}));
        CHECK(edited->size() < image.size());  // the entry's length prefix follows the shorter varints
    }

    TEST_CASE("terminals that travel with the process keep their session") {
        auto image = image_of({tty_entry(0x1, pty, 4242, 4243), tty_entry(0x2, ext_tty, 300, 301),
                               tty_entry(0x3, pty, 7, 7)});
        auto edited = clear_external_terminal_sessions(image);
        REQUIRE(edited);
        CHECK(*edited == image_of({tty_entry(0x1, pty, 4242, 4243), tty_entry(0x2, ext_tty, 0, 0),
                                   tty_entry(0x3, pty, 7, 7)}));
    }

    TEST_CASE("an image without terminals stays as it is") {
        auto image = image_of({});
        CHECK(clear_external_terminal_sessions(image) == image);
    }

    TEST_CASE("anything but a well-formed tty-info image is refused") {
        auto good = image_of({tty_entry(0x12, ext_tty, 13229, 13229)});
        SUBCASE("another image's magic") {
            auto other = good;
            other[4] ^= 1;
            CHECK_FALSE(clear_external_terminal_sessions(other));
        }
        SUBCASE("too short for its header") { CHECK_FALSE(clear_external_terminal_sessions(bytes(good.begin(), good.begin() + 6))); }
        SUBCASE("an entry longer than the file") {
            auto cut = good;
            cut.pop_back();
            CHECK_FALSE(clear_external_terminal_sessions(cut));
        }
        SUBCASE("a field running past its entry") {
            auto bad = image_of({bytes{0x08, 0x96}});  // a varint that never ends
            CHECK_FALSE(clear_external_terminal_sessions(bad));
        }
        SUBCASE("an unknown wire type") {
            auto bad = image_of({bytes{0x0b, 0x00}});  // field 1, wire type 3 (groups)
            CHECK_FALSE(clear_external_terminal_sessions(bad));
        }
    }
}
