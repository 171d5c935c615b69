// The file manifest, the receiver's request and the end of the files: what
// a peer may say about the files of a process, and what is refused on decode
// (paths that are not plain absolute paths, odd kinds and modes, requests
// out of order).
#include "test_support.hpp"

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace proto = rfork::protocol;
using rfork::errc;
using rfork_test::bytes;
using rfork_test::check_exact_length_required;
using rfork_test::decode_as;
using rfork_test::payload_of;

namespace {

proto::file_description library() {
    proto::file_description f;
    f.path = "/usr/lib/x86_64-linux-gnu/libfmt.so.9.1.0";
    f.kind = proto::file_kind::regular;
    f.mode = 0644;
    f.uid = 0, f.gid = 0;
    f.size = 123456;
    f.mtime_ns = 1700000000123456789;
    for (std::size_t i = 0; i < f.sha256.size(); ++i) f.sha256[i] = static_cast<unsigned char>(i);
    f.build_id = {0xde, 0xad, 0xbe, 0xef};
    return f;
}

proto::file_manifest one_file(proto::file_description f) {
    proto::file_manifest m;
    m.files.push_back(std::move(f));
    return m;
}

}  // namespace

TEST_SUITE("unit.messages") {

TEST_CASE("files: the messages are known frame types of their own") {
    for (auto t : {proto::message_type::file_manifest, proto::message_type::file_request,
                   proto::message_type::file_data, proto::message_type::files_end})
        CHECK(proto::is_known(t));
    CHECK(payload_of(proto::files_end{}).empty());
    CHECK(decode_as<proto::files_end>(bytes{0}) == errc::malformed_message);
}

TEST_CASE("files: a path is absolute and canonical or refused") {
    for (std::string good : std::vector<std::string>{"/", "/a", "/usr/lib/libc.so.6", "/a b/c\nd", "/..a/b..", "/.hidden"})
        CHECK_MESSAGE(proto::is_canonical_path(good), good);
    for (std::string bad : std::vector<std::string>{"", "a", "a/b", "/a/", "//a", "/a//b", "/./a", "/a/.", "/a/../b", "/..",
                            std::string("/a\0b", 4), "/" + std::string(4095, 'x')})
        CHECK_MESSAGE(!proto::is_canonical_path(bad), bad);
    CHECK(proto::is_canonical_path("/" + std::string(4094, 'x')));
}

TEST_CASE("files: a manifest goes and comes back whole") {
    auto m = one_file(library());
    proto::file_description dir;
    dir.path = "/work/build";
    dir.kind = proto::file_kind::directory;
    dir.mode = 02775;
    dir.uid = 1000, dir.gid = 1000;
    m.files.push_back(dir);
    proto::file_manifest out;
    REQUIRE_FALSE(proto::decode(payload_of(m), out));
    REQUIRE(out.files.size() == 2);
    auto& f = out.files[0];
    CHECK(f.path == m.files[0].path);
    CHECK(f.kind == proto::file_kind::regular);
    CHECK(f.mode == 0644);
    CHECK(f.size == 123456);
    CHECK(f.mtime_ns == 1700000000123456789);
    CHECK(f.sha256 == m.files[0].sha256);
    CHECK(f.build_id == m.files[0].build_id);
    CHECK_FALSE(f.writable);
    CHECK(out.files[1].path == "/work/build");
    CHECK(out.files[1].mode == 02775);
    CHECK(out.files[1].uid == 1000);
    check_exact_length_required(m);
}

TEST_CASE("files: a manifest with a hostile file description is refused whole") {
    SUBCASE("a relative path") {
        auto f = library();
        f.path = "../../etc/shadow";
        CHECK(decode_as<proto::file_manifest>(payload_of(one_file(f))) == errc::malformed_message);
    }
    SUBCASE("a path through ..") {
        auto f = library();
        f.path = "/tmp/../etc/passwd";
        CHECK(decode_as<proto::file_manifest>(payload_of(one_file(f))) == errc::malformed_message);
    }
    SUBCASE("a kind that does not exist") {
        auto payload = payload_of(one_file(library()));
        // count(4), path length(4), path, then the kind byte
        payload[8 + library().path.size()] = 9;
        CHECK(decode_as<proto::file_manifest>(payload) == errc::malformed_message);
    }
    SUBCASE("mode bits beyond 07777") {
        auto f = library();
        f.mode = 0100644;  // the file type has a field of its own
        CHECK(decode_as<proto::file_manifest>(payload_of(one_file(f))) == errc::malformed_message);
    }
    SUBCASE("a build-id over 64 bytes") {
        auto f = library();
        f.build_id.assign(65, 1);
        CHECK(decode_as<proto::file_manifest>(payload_of(one_file(f))) == errc::malformed_message);
    }
    SUBCASE("more files than any manifest has") {
        bytes payload = {0, 0, 0x10, 0x01};  // 4097
        CHECK(decode_as<proto::file_manifest>(payload) == errc::malformed_message);
    }
}

TEST_CASE("files: a request names files in ascending order once each") {
    proto::file_request r{{0, 3, 7}};
    proto::file_request out;
    REQUIRE_FALSE(proto::decode(payload_of(r), out));
    CHECK(out.wanted == r.wanted);
    CHECK(payload_of(proto::file_request{{}}) == bytes{0, 0, 0, 0});
    CHECK(decode_as<proto::file_request>(payload_of(proto::file_request{{3, 3}})) == errc::malformed_message);
    CHECK(decode_as<proto::file_request>(payload_of(proto::file_request{{4, 2}})) == errc::malformed_message);
    check_exact_length_required(r);
}

}
