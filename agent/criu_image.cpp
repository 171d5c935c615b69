#include "criu_image.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace rfork::agent {

namespace {

// images/magic.h and images/tty.proto of CRIU.
constexpr std::uint32_t img_common_magic = 0x54564319;
constexpr std::uint32_t tty_info_magic = 0x59453036;
constexpr std::uint32_t core_magic = 0x55053847;
constexpr std::uint64_t core_field_thread_core = 5, thread_core_field_creds = 10;
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

bool adapt_external_terminals_in(const std::string& images_dir) {
    auto path = std::filesystem::path(images_dir) / "tty-info.img";
    if (!std::filesystem::exists(path)) return true;
    bytes image;
    {
        std::ifstream in(path, std::ios::binary);
        image.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto edited = adapt_external_terminals(image);
    if (!edited) return false;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(edited->data()), static_cast<std::streamsize>(edited->size()));
    return static_cast<bool>(out);
}

}  // namespace rfork::agent

namespace rfork::agent {

namespace {

// The payload of the first length-delimited field `number` of a message.
std::optional<std::pair<std::size_t, std::size_t>> submessage(const bytes& b, std::size_t begin, std::size_t end,
                                                              std::uint64_t number) {
    std::vector<field> fields;
    if (!split_fields(b, begin, end, fields)) return std::nullopt;
    for (auto& f : fields) {
        if (f.number != number || f.wire_type != 2) continue;
        std::size_t at = f.begin;
        std::uint64_t key, length;
        read_varint(b, at, f.end, key);
        read_varint(b, at, f.end, length);
        return std::pair{at, f.end};
    }
    return std::nullopt;
}

}  // namespace

std::optional<process_ids> ids_of_core_image(const bytes& image) {
    if (image.size() < 12 || get_u32le(image, 0) != img_common_magic || get_u32le(image, 4) != core_magic)
        return std::nullopt;
    std::size_t size = get_u32le(image, 8);
    if (size > image.size() - 12) return std::nullopt;
    auto thread_core = submessage(image, 12, 12 + size, core_field_thread_core);
    if (!thread_core) return std::nullopt;
    auto creds = submessage(image, thread_core->first, thread_core->second, thread_core_field_creds);
    if (!creds) return std::nullopt;
    std::vector<field> fields;
    if (!split_fields(image, creds->first, creds->second, fields)) return std::nullopt;
    std::uint64_t value[9] = {};
    bool seen[9] = {};
    for (auto& f : fields)
        if (f.wire_type == 0 && f.number >= 1 && f.number <= 8) value[f.number] = f.value, seen[f.number] = true;
    for (int i = 1; i <= 8; ++i)
        if (!seen[i] || value[i] > 0xffffffffu) return std::nullopt;
    auto id = [&](int i) { return static_cast<std::uint32_t>(value[i]); };
    return process_ids{id(1), id(3), id(5), id(7), id(2), id(4), id(6), id(8)};
}

std::optional<std::vector<process_ids>> ids_of_images(const std::string& images_dir) {
    std::vector<process_ids> all;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(images_dir, ec)) {
        auto name = entry.path().filename().string();
        if (!name.starts_with("core-") || !name.ends_with(".img")) continue;
        std::ifstream in(entry.path(), std::ios::binary);
        bytes image((std::istreambuf_iterator<char>(in)), {});
        auto ids = ids_of_core_image(image);
        if (!ids) return std::nullopt;
        all.push_back(*ids);
    }
    if (ec || all.empty()) return std::nullopt;
    return all;
}

}  // namespace rfork::agent
