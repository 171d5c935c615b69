#include "send/criu_image.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace rfork::agent {

namespace {

// images/magic.h and images/tty.proto of CRIU.
constexpr std::uint32_t img_common_magic = 0x54564319;
constexpr std::uint32_t tty_info_magic = 0x59453036;
constexpr std::uint64_t tty_type_ext_tty = 5;
constexpr std::uint64_t field_type = 2, field_sid = 6, field_pgrp = 7, field_termios = 9;
constexpr std::uint64_t termios_field_oflag = 2;
constexpr std::uint64_t opost = 01;  // <termios.h>

using bytes = std::vector<unsigned char>;

std::uint32_t get_u32le(const bytes& b, std::size_t at) {
    return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
           std::uint32_t(b[at + 3]) << 24;
}

void put_u32le(bytes& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

bool read_varint(const bytes& b, std::size_t& at, std::size_t end, std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (at >= end) return false;
        unsigned char c = b[at++];
        v |= std::uint64_t(c & 0x7f) << shift;
        if (!(c & 0x80)) return true;
    }
    return false;
}

void write_varint(bytes& out, std::uint64_t v) {
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        out.push_back(static_cast<unsigned char>(c | (v ? 0x80 : 0)));
    } while (v);
}

struct field {
    std::uint64_t number, wire_type, value;  // value: varints only
    std::size_t begin, end;                  // the raw bytes of the whole field
};

// Splits one protobuf message into its top-level fields.
bool split_fields(const bytes& b, std::size_t begin, std::size_t end, std::vector<field>& out) {
    for (std::size_t at = begin; at < end;) {
        field f{};
        f.begin = at;
        std::uint64_t key;
        if (!read_varint(b, at, end, key)) return false;
        f.number = key >> 3;
        f.wire_type = key & 7;
        std::uint64_t length = 0;
        switch (f.wire_type) {
        case 0:
            if (!read_varint(b, at, end, f.value)) return false;
            break;
        case 1: length = 8; break;
        case 2:
            if (!read_varint(b, at, end, length)) return false;
            break;
        case 5: length = 4; break;
        default: return false;
        }
        if (length > end - at) return false;
        at += length;
        f.end = at;
        out.push_back(f);
    }
    return true;
}

// A termios_entry with OPOST cleared in c_oflag; nullopt if malformed.
std::optional<bytes> without_output_processing(const bytes& b, std::size_t begin, std::size_t end) {
    std::vector<field> fields;
    if (!split_fields(b, begin, end, fields)) return std::nullopt;
    bytes out;
    for (auto& f : fields) {
        if (f.number == termios_field_oflag && f.wire_type == 0) {
            write_varint(out, f.number << 3);
            write_varint(out, f.value & ~opost);
        } else {
            out.insert(out.end(), b.begin() + static_cast<long>(f.begin), b.begin() + static_cast<long>(f.end));
        }
    }
    return out;
}

}  // namespace

std::optional<bytes> adapt_external_terminals(const bytes& image) {
    if (image.size() < 8 || get_u32le(image, 0) != img_common_magic || get_u32le(image, 4) != tty_info_magic)
        return std::nullopt;
    bytes out(image.begin(), image.begin() + 8);
    for (std::size_t at = 8; at < image.size();) {
        if (image.size() - at < 4) return std::nullopt;
        std::size_t size = get_u32le(image, at);
        at += 4;
        if (size > image.size() - at) return std::nullopt;
        std::vector<field> fields;
        if (!split_fields(image, at, at + size, fields)) return std::nullopt;
        bool external = false;
        for (auto& f : fields) external |= f.number == field_type && f.wire_type == 0 && f.value == tty_type_ext_tty;
        bytes entry;
        for (auto& f : fields) {
            if (external && f.wire_type == 0 && (f.number == field_sid || f.number == field_pgrp)) {
                write_varint(entry, f.number << 3);
                write_varint(entry, 0);
            } else if (external && f.wire_type == 2 && f.number == field_termios) {
                // The payload follows the key and length varints.
                std::size_t payload = f.begin;
                std::uint64_t key, length;
                read_varint(image, payload, f.end, key);
                read_varint(image, payload, f.end, length);
                auto termios = without_output_processing(image, payload, f.end);
                if (!termios) return std::nullopt;
                write_varint(entry, key);
                write_varint(entry, termios->size());
                entry.insert(entry.end(), termios->begin(), termios->end());
            } else {
                entry.insert(entry.end(), image.begin() + static_cast<long>(f.begin), image.begin() + static_cast<long>(f.end));
            }
        }
        put_u32le(out, static_cast<std::uint32_t>(entry.size()));
        out.insert(out.end(), entry.begin(), entry.end());
        at += size;
    }
    return out;
}

bool adapt_external_terminals_in(int images_dir_fd) {
    int fd = ::openat(images_dir_fd, "tty-info.img", O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT;
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } closing{fd};
    struct stat st {};
    constexpr off_t limit = 16 << 20;  // a few entries per terminal, in truth
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > limit) return false;
    bytes image(static_cast<std::size_t>(st.st_size));
    if (::pread(fd, image.data(), image.size(), 0) != static_cast<ssize_t>(image.size())) return false;
    auto edited = adapt_external_terminals(image);
    if (!edited) return false;
    return ::pwrite(fd, edited->data(), edited->size(), 0) == static_cast<ssize_t>(edited->size()) &&
           ::ftruncate(fd, static_cast<off_t>(edited->size())) == 0;
}

}  // namespace rfork::agent
