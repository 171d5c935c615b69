// The agent's one edit of a CRIU image: external terminals lose their session
// and their output processing.
#include "send/criu_image.hpp"
#include "wire_writer.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using rfork::agent::adapt_external_terminals;
using namespace rfork::test;

namespace {

// A tty_info_entry as CRIU writes it: id, type, locked, exclusive,
// packet_mode, sid, pgrp, rdev, then a termios_entry (c_iflag, c_oflag, c_cc).
bytes tty_entry(std::uint32_t id, std::uint32_t type, std::uint32_t sid, std::uint32_t pgrp, std::uint32_t oflag) {
    bytes e;
    put_varint_field(e, 1, id);
    put_varint_field(e, 2, type);
    put_varint_field(e, 3, 0);
    put_varint_field(e, 4, 0);
    put_varint_field(e, 5, 0);
    put_varint_field(e, 6, sid);
    put_varint_field(e, 7, pgrp);
    put_varint_field(e, 8, 0x8800);
    bytes termios;
    put_varint_field(termios, 1, 0x500);
    put_varint_field(termios, 2, oflag);
    put_varint_field(termios, 8, 3);  // c_cc, repeated
    put_varint_field(termios, 8, 28);
    put_varint(e, (9 << 3) | 2);
    put_varint(e, termios.size());
    e.insert(e.end(), termios.begin(), termios.end());
    return e;
}

bytes image_of(const std::vector<bytes>& entries) {
    bytes image;
    put_u32le(image, 0x54564319);  // IMG_COMMON_MAGIC
    put_u32le(image, 0x59453036);  // TTY_INFO_MAGIC
    for (auto& e : entries) {
        put_u32le(image, static_cast<std::uint32_t>(e.size()));
        image.insert(image.end(), e.begin(), e.end());
    }
    return image;
}

constexpr std::uint32_t ext_tty = 5, pty = 3;
constexpr std::uint32_t opost = 01, onlcr = 04;

}  // namespace

TEST_SUITE("unit.criu_image") {
    TEST_CASE("an external terminal loses its session and process group and output processing only") {
        auto image = image_of({tty_entry(0x12, ext_tty, 13229, 13229, opost | onlcr)});
        auto edited = adapt_external_terminals(image);
        REQUIRE(edited);
        CHECK(*edited == image_of({tty_entry(0x12, ext_tty, 0, 0, onlcr)}));
        CHECK(edited->size() < image.size());  // the entry's length prefix follows the shorter varints
    }

    TEST_CASE("terminals that travel with the process keep their session") {
        auto image = image_of({tty_entry(0x1, pty, 4242, 4243, opost), tty_entry(0x2, ext_tty, 300, 301, opost),
                               tty_entry(0x3, pty, 7, 7, opost | onlcr)});
        auto edited = adapt_external_terminals(image);
        REQUIRE(edited);
        CHECK(*edited == image_of({tty_entry(0x1, pty, 4242, 4243, opost), tty_entry(0x2, ext_tty, 0, 0, 0),
                                   tty_entry(0x3, pty, 7, 7, opost | onlcr)}));
    }

    TEST_CASE("an image without terminals stays as it is") {
        auto image = image_of({});
        CHECK(adapt_external_terminals(image) == image);
    }

    TEST_CASE("anything but a well-formed tty-info image is refused") {
        auto good = image_of({tty_entry(0x12, ext_tty, 13229, 13229, opost)});
        SUBCASE("another image's magic") {
            auto other = good;
            other[4] ^= 1;
            CHECK_FALSE(adapt_external_terminals(other));
        }
        SUBCASE("too short for its header") { CHECK_FALSE(adapt_external_terminals(bytes(good.begin(), good.begin() + 6))); }
        SUBCASE("an entry longer than the file") {
            auto cut = good;
            cut.pop_back();
            CHECK_FALSE(adapt_external_terminals(cut));
        }
        SUBCASE("a field running past its entry") {
            auto bad = image_of({bytes{0x08, 0x96}});  // a varint that never ends
            CHECK_FALSE(adapt_external_terminals(bad));
        }
        SUBCASE("an unknown wire type") {
            auto bad = image_of({bytes{0x0b, 0x00}});  // field 1, wire type 3 (groups)
            CHECK_FALSE(adapt_external_terminals(bad));
        }
    }
}
