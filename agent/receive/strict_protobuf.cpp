#include "receive/strict_protobuf.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace rfork::agent {

namespace {

enum wire_type : unsigned { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

struct reader {
    std::span<const unsigned char> bytes;
    std::size_t at = 0;

    bool done() const { return at == bytes.size(); }

    // At most ten bytes, and the tenth may carry only bit 63.
    bool read_varint(std::uint64_t& v) {
        v = 0;
        for (int i = 0; i < 10; ++i) {
            if (at == bytes.size()) return false;
            unsigned char c = bytes[at++];
            if (i == 9 && c > 1) return false;
            v |= std::uint64_t(c & 0x7f) << (7 * i);
            if (!(c & 0x80)) return true;
        }
        return false;
    }

    bool skip(std::uint64_t n) {
        if (n > bytes.size() - at) return false;
        at += static_cast<std::size_t>(n);
        return true;
    }
};

wire_type wire_type_of(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return fixed64;
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT: return fixed32;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE: return length_delimited;
    default: return varint;
    }
}

// protobuf-c keeps only the low bits of a varint too wide for its field:
// 2^32 read as a uint32 is 0. Such a value has no meaning of its own here.
bool varint_fits(ProtobufCType type, std::uint64_t v) {
    constexpr auto u32_max = std::numeric_limits<std::uint32_t>::max();
    auto as_signed = static_cast<std::int64_t>(v);
    switch (type) {
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_SINT32: return v <= u32_max;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM:
        return as_signed >= std::numeric_limits<std::int32_t>::min() &&
               as_signed <= std::numeric_limits<std::int32_t>::max();
    case PROTOBUF_C_TYPE_BOOL: return v <= 1;
    default: return true;
    }
}

struct checker {
    std::span<const ProtobufCMessageDescriptor* const> closed;
    int max_depth;

    // A packed repeated number: a whole number of values, each fitting.
    std::optional<std::string> check_packed(const ProtobufCFieldDescriptor& f, std::span<const unsigned char> payload,
                                            const std::string& path) {
        auto wt = wire_type_of(f.type);
        bool whole = true;
        if (wt == fixed32) whole = payload.size() % 4 == 0;
        if (wt == fixed64) whole = payload.size() % 8 == 0;
        if (wt == varint) {
            reader r{payload};
            std::uint64_t v;
            while (whole && !r.done()) whole = r.read_varint(v) && varint_fits(f.type, v);
        }
        if (!whole) return fmt::format("{} holds a malformed packed list", path);
        return std::nullopt;
    }

    // Over 60 lines: one pass over a message's fields, every check on the
    // field just read, in the order the wire gives them.
    std::optional<std::string> check(const ProtobufCMessageDescriptor& type, std::span<const unsigned char> wire,
                                     const std::string& path, int depth) {
        if (depth > max_depth) return fmt::format("{} nests messages more than {} deep", path, max_depth);
        bool is_closed = std::find(closed.begin(), closed.end(), &type) != closed.end();
        std::vector<unsigned> seen(type.n_fields);
        reader r{wire};
        while (!r.done()) {
            std::uint64_t key;
            if (!r.read_varint(key)) return fmt::format("{} has a truncated field key", path);
            auto number = key >> 3;
            auto wt = static_cast<unsigned>(key & 7);
            if (number == 0 || number > 0x1fffffff) return fmt::format("{} has a field numbered {}", path, number);
            std::size_t length = 0;
            std::uint64_t value = 0;
            switch (wt) {
            case varint:
                if (!r.read_varint(value)) return fmt::format("{} has a truncated varint", path);
                break;
            case fixed64: length = 8; break;
            case fixed32: length = 4; break;
            case length_delimited:
                if (!r.read_varint(value)) return fmt::format("{} has a truncated length", path);
                if (value > r.bytes.size() - r.at)
                    return fmt::format("{}: field {} is longer than its message", path, number);
                length = static_cast<std::size_t>(value);
                break;
            default: return fmt::format("{}: field {} has wire type {}, which CRIU never writes", path, number, wt);
            }
            auto begin = r.at;
            if (!r.skip(length)) return fmt::format("{}: field {} is truncated", path, number);
            auto payload = r.bytes.subspan(begin, length);

            auto* f = protobuf_c_message_descriptor_get_field(&type, static_cast<unsigned>(number));
            if (!f) {
                if (is_closed) return fmt::format("{} has field {}, which this agent does not know", path, number);
                continue;
            }
            auto field_path = path + "." + f->name;
            auto index = static_cast<std::size_t>(f - type.fields);
            bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
            if (!repeated && seen[index]) return fmt::format("{} appears more than once", field_path);
            // A oneof's members share their quantifier_offset: one member at most.
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
                for (unsigned i = 0; i < type.n_fields; ++i)
                    if (i != index && seen[i] && (type.fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                        type.fields[i].quantifier_offset == f->quantifier_offset)
                        return fmt::format("{} is a second member of its oneof", field_path);
            ++seen[index];

            auto expected = wire_type_of(f->type);
            if (repeated && wt == length_delimited && expected != length_delimited) {
                if (auto problem = check_packed(*f, payload, field_path)) return problem;
                continue;
            }
            if (wt != expected) return fmt::format("{} has wire type {}, not {}", field_path, wt, unsigned(expected));
            if (wt == varint && !varint_fits(f->type, value))
                return fmt::format("{} holds {}, out of range for its type", field_path, value);
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                auto& inner = *static_cast<const ProtobufCMessageDescriptor*>(f->descriptor);
                if (auto problem = check(inner, payload, field_path, depth + 1)) return problem;
            }
        }
        for (unsigned i = 0; i < type.n_fields; ++i)
            if (type.fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i])
                return fmt::format("{}.{} is required but missing", path, type.fields[i].name);
        return std::nullopt;
    }
};

}  // namespace

std::optional<std::string> strict_protobuf_problem(const ProtobufCMessageDescriptor& type,
                                                   std::span<const unsigned char> wire,
                                                   std::span<const ProtobufCMessageDescriptor* const> closed,
                                                   int max_depth) {
    return checker{closed, max_depth}.check(type, wire, type.name, 0);
}

}  // namespace rfork::agent
