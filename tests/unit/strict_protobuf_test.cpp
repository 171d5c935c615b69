// The strict structural pass that runs before protobuf-c unpacks an image:
// one reading of every message, or a refusal that says where it failed.
#include "receive/strict_protobuf.hpp"
#include "wire_writer.hpp"

#include <core.pb-c.h>
#include <creds.pb-c.h>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

using rfork::agent::strict_protobuf_problem;
using namespace rfork::test;

namespace {

void embedded(bytes& out, std::uint32_t field, const bytes& payload) {
    put_varint(out, field << 3 | 2);
    put_varint(out, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
}

// creds_entry's required fields: uid gid euid egid suid sgid fsuid fsgid, secbits.
bytes creds(std::uint64_t uid = 1000) {
    bytes out;
    put_varint_field(out, 1, uid);
    for (std::uint32_t field = 2; field <= 8; ++field) put_varint_field(out, field, 1000);
    put_varint_field(out, 13, 0);
    return out;
}

std::string problem(const ProtobufCMessageDescriptor& type, const bytes& wire, int depth = 16) {
    static const std::array<const ProtobufCMessageDescriptor*, 1> closed{&creds_entry__descriptor};
    auto p = strict_protobuf_problem(type, wire, closed, depth);
    return p ? *p : "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("unit.strict_protobuf") {
    TEST_CASE("a well-formed message passes with repeated fields plain or packed") {
        auto c = creds();
        put_varint_field(c, 14, 44);  // groups, one by one
        put_varint_field(c, 14, 45);
        bytes words;
        put_varint(words, 0);
        put_varint(words, 0);
        embedded(c, 11, words);  // cap_eff, packed
        CHECK(problem(creds_entry__descriptor, c) == "");
    }

    TEST_CASE("a singular field that appears twice is refused") {
        auto c = creds();
        put_varint_field(c, 1, 0);
        CHECK(problem(creds_entry__descriptor, c) == "creds_entry.uid appears more than once");
        bytes thread_core;
        put_varint_field(thread_core, 1, 0);  // futex_rla
        put_varint_field(thread_core, 2, 0);  // futex_rla_len
        embedded(thread_core, 10, creds());
        embedded(thread_core, 10, creds(0));
        CHECK(problem(thread_core_entry__descriptor, thread_core) == "thread_core_entry.creds appears more than once");
    }

    TEST_CASE("a missing required field is refused") {
        bytes c;
        put_varint_field(c, 1, 1000);
        CHECK(has(problem(creds_entry__descriptor, c), "creds_entry.gid is required but missing"));
    }

    TEST_CASE("a wire type other than the declared type's is refused") {
        auto c = creds();
        embedded(c, 18, {1});  // no_new_privs is a uint32
        CHECK(has(problem(creds_entry__descriptor, c), "creds_entry.no_new_privs has wire type 2"));
        bytes group;
        put_varint(group, 15 << 3 | 3);  // a group start: CRIU never writes one
        CHECK(has(problem(creds_entry__descriptor, group), "wire type 3"));
    }

    TEST_CASE("a uid wider than 32 bits is refused instead of being cut to 0") {
        CHECK(has(problem(creds_entry__descriptor, creds(std::uint64_t(1) << 32)), "creds_entry.uid holds 4294967296"));
        bytes c(12, 0x80);  // the key of field 1, then eleven bytes that all say "more"
        c[0] = 1 << 3;
        CHECK(has(problem(creds_entry__descriptor, c), "truncated varint"));
    }

    TEST_CASE("lengths beyond their message are refused") {
        bytes c = creds();
        put_varint(c, 17 << 3 | 2);  // apparmor_data
        put_varint(c, 100);
        c.push_back(1);
        CHECK(has(problem(creds_entry__descriptor, c), "longer than its message"));
        bytes fixed;
        put_varint(fixed, 1 << 3 | 1);  // 8 bytes announced, 2 there
        fixed.push_back(0);
        fixed.push_back(0);
        CHECK(has(problem(core_entry__descriptor, fixed), "truncated"));
        bytes packed = creds();
        embedded(packed, 11, {0x80});
        CHECK(has(problem(creds_entry__descriptor, packed), "creds_entry.cap_eff holds a malformed packed list"));
    }

    TEST_CASE("unknown fields pass except in closed messages") {
        auto c = creds();
        put_varint_field(c, 99, 1);
        CHECK(has(problem(creds_entry__descriptor, c), "creds_entry has field 99"));
        bytes core;
        put_varint_field(core, 1, 1);  // mtype
        put_varint_field(core, 99, 1);
        CHECK(problem(core_entry__descriptor, core) == "");
    }

    TEST_CASE("messages nested deeper than the bound are refused") {
        bytes thread_core;
        put_varint_field(thread_core, 1, 0);
        put_varint_field(thread_core, 2, 0);
        embedded(thread_core, 10, creds());
        bytes core;
        put_varint_field(core, 1, 1);
        embedded(core, 5, thread_core);
        CHECK(problem(core_entry__descriptor, core, 2) == "");
        CHECK(has(problem(core_entry__descriptor, core, 1), "core_entry.thread_core.creds nests messages more than 1 deep"));
    }
}
