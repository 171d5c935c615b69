// file_identity: SHA-256 and ELF build-ids of real files (digests known
// beforehand, build-ids as readelf prints them), hostile ELF files that must
// give nothing and no crash, and the cache that reads a file once per version.
#include "common/file_identity.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace rfork::agent;
namespace fs = std::filesystem;

namespace {

using bytes = std::vector<unsigned char>;

// SHA-256 digests as sha256sum prints them.
constexpr std::string_view sha256_empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::string_view sha256_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr std::string_view sha256_ab = "fb8e20fc2e4c3f248c60c39bd652f3c1347298bb977b8b4d5903b85055620603";
// FIPS 180-2's one million 'a's.
constexpr std::string_view sha256_million_a = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
// 3 MiB and 7 bytes of 'a': more than three of sha256_of's 1 MiB reads.
constexpr std::size_t long_size = (3 << 20) + 7;
constexpr std::string_view sha256_long_a = "7d8aedf62548b6943c912ca5192d7a2c13322cd689d7a47d4b3944b4bb2e30c6";

// A new directory under the system's temporary one, removed with the test.
struct scratch {
    fs::path path;
    scratch() {
        std::string pattern = (fs::temp_directory_path() / "rfork-file-identity-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()));
        path = pattern;
    }
    ~scratch() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

void write_file(const fs::path& p, const bytes& content) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
    REQUIRE(out.good());
}

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

// A file open for reading, closed with the object.
struct open_file {
    int fd;
    explicit open_file(const fs::path& p) : fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC)) { REQUIRE(fd >= 0); }
    ~open_file() { ::close(fd); }
    open_file(const open_file&) = delete;
    open_file& operator=(const open_file&) = delete;
    struct stat status() const {
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        return st;
    }
    std::uint64_t size() const { return static_cast<std::uint64_t>(status().st_size); }
};

std::string hex(const bytes& b) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : b) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 0xf]);
    }
    return out;
}

std::optional<std::string> sha256_hex_of(const fs::path& p, std::optional<std::uint64_t> size = {}) {
    open_file f(p);
    auto digest = sha256_of(f.fd, size ? *size : f.size());
    if (!digest) return std::nullopt;
    return to_hex(*digest);
}

// --- ELF files built byte by byte ---------------------------------------------------------

void put(bytes& b, std::size_t at, std::uint64_t v, int width, bool msb) {
    for (int i = 0; i < width; ++i) {
        int shift = 8 * (msb ? width - 1 - i : i);
        b[at + static_cast<std::size_t>(i)] = static_cast<unsigned char>(v >> shift);
    }
}

std::size_t align_up(std::size_t v, std::size_t align) { return (v + align - 1) / align * align; }

// One note as it sits in a PT_NOTE segment: header, name and descriptor, each
// padded to `align` from the note's start.
bytes note(bool msb, std::string_view name, const bytes& desc, std::uint32_t type, std::size_t align = 4) {
    bytes b(12);
    put(b, 0, name.size(), 4, msb);
    put(b, 4, desc.size(), 4, msb);
    put(b, 8, type, 4, msb);
    b.insert(b.end(), name.begin(), name.end());
    b.resize(align_up(b.size(), align));
    b.insert(b.end(), desc.begin(), desc.end());
    b.resize(align_up(b.size(), align));
    return b;
}

constexpr std::string_view gnu{"GNU\0", 4};
constexpr std::uint32_t nt_gnu_abi_tag = 1, nt_gnu_build_id = 3;

bytes sample_build_id(std::size_t n = 20) {
    bytes id(n);
    for (std::size_t i = 0; i < n; ++i) id[i] = static_cast<unsigned char>(0xa0 + i * 7);
    return id;
}

// A minimal ELF file: header, a program header table of a PT_LOAD and a
// PT_NOTE, then the notes; where the fields are, for tests to change them.
struct elf_image {
    bool is64, msb;
    bytes data;
    std::size_t phoff_at, phentsize_at, phnum_at;       // in the ELF header
    std::size_t p_offset_at, p_filesz_at, p_align_at;  // of the PT_NOTE
    std::size_t notes_at;

    elf_image(bool is64_, bool msb_, const bytes& notes, std::uint64_t p_align = 4) : is64(is64_), msb(msb_) {
        const std::size_t ehsize = is64 ? 64 : 52, phentsize = is64 ? 56 : 32;
        phoff_at = is64 ? 32 : 28;
        phentsize_at = is64 ? 54 : 42;
        phnum_at = is64 ? 56 : 44;
        const std::size_t phoff = ehsize, note_phdr = phoff + phentsize;
        notes_at = phoff + 2 * phentsize;
        data.assign(notes_at, 0);
        data.insert(data.end(), notes.begin(), notes.end());
        const unsigned char ident[] = {0x7f, 'E', 'L', 'F', static_cast<unsigned char>(is64 ? 2 : 1),
                                       static_cast<unsigned char>(msb ? 2 : 1), 1};
        std::copy(std::begin(ident), std::end(ident), data.begin());
        put16(16, 2);                   // e_type: ET_EXEC
        put16(18, is64 ? 62 : 3);       // e_machine: x86-64 or i386
        put32(20, 1);                   // e_version
        put_word(phoff_at, phoff);
        put16(is64 ? 52 : 40, static_cast<std::uint16_t>(ehsize));
        put16(phentsize_at, static_cast<std::uint16_t>(phentsize));
        put16(phnum_at, 2);
        // A PT_LOAD first: the PT_NOTE is found among others.
        put32(phoff, 1);
        put_word(phoff + (is64 ? 32 : 16), data.size());
        put32(note_phdr, 4);
        p_offset_at = note_phdr + (is64 ? 8 : 4);
        p_filesz_at = note_phdr + (is64 ? 32 : 16);
        p_align_at = note_phdr + (is64 ? 48 : 28);
        put_word(p_offset_at, notes_at);
        put_word(p_filesz_at, notes.size());
        put_word(note_phdr + (is64 ? 40 : 20), notes.size());  // p_memsz
        put_word(p_align_at, p_align);
    }

    void put16(std::size_t at, std::uint64_t v) { put(data, at, v, 2, msb); }
    void put32(std::size_t at, std::uint64_t v) { put(data, at, v, 4, msb); }
    void put_word(std::size_t at, std::uint64_t v) { put(data, at, v, is64 ? 8 : 4, msb); }
};

elf_image with_build_id(bool is64, bool msb, const bytes& id = sample_build_id()) {
    return elf_image(is64, msb, note(msb, gnu, id, nt_gnu_build_id));
}

// elf_build_id of `content` in a memfd (thousands of these: rewriting a file on
// disk as often takes seconds); `claimed` is the size it is told.
bytes build_id_of(const bytes& content, std::optional<std::uint64_t> claimed = {}) {
    int fd = ::memfd_create("rfork-elf-test", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    auto id = elf_build_id(fd, claimed ? *claimed : content.size());
    ::close(fd);
    return id;
}

// What readelf makes of the build-id of `path`: nullopt if readelf cannot be run.
std::optional<std::string> readelf_build_id(const fs::path& path) {
    std::string command = "readelf -n '" + path.string() + "' 2>/dev/null";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return std::nullopt;
    std::string output;
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
    int status = ::pclose(pipe);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
    constexpr std::string_view label = "Build ID: ";
    auto at = output.find(label);
    if (at == std::string::npos) return std::string();
    at += label.size();
    return output.substr(at, output.find_first_not_of("0123456789abcdef", at) - at);
}

fs::path this_binary() { return fs::read_symlink("/proc/self/exe"); }

}  // namespace

TEST_SUITE("unit.file_identity") {
    TEST_CASE("file_identity: SHA-256 of files equals the known digests") {
        scratch s;
        write_file(s.path / "abc", to_bytes("abc"));
        write_file(s.path / "empty", {});
        write_file(s.path / "million", bytes(1'000'000, 'a'));
        write_file(s.path / "long", bytes(long_size, 'a'));
        CHECK(sha256_hex_of(s.path / "abc") == std::string(sha256_abc));
        CHECK(sha256_hex_of(s.path / "empty") == std::string(sha256_empty));
        CHECK(sha256_hex_of(s.path / "million") == std::string(sha256_million_a));
        CHECK(sha256_hex_of(s.path / "long") == std::string(sha256_long_a));
        // The size asked for is what is hashed: a prefix when the file is longer.
        CHECK(sha256_hex_of(s.path / "abc", 2) == std::string(sha256_ab));
        CHECK(sha256_hex_of(s.path / "long", 0) == std::string(sha256_empty));
    }

    TEST_CASE("file_identity: a file shorter than the size asked has no SHA-256") {
        scratch s;
        write_file(s.path / "abc", to_bytes("abc"));
        write_file(s.path / "long", bytes(long_size, 'a'));
        CHECK_FALSE(sha256_hex_of(s.path / "abc", 4));
        CHECK_FALSE(sha256_hex_of(s.path / "long", long_size + 1));
        CHECK_FALSE(sha256_hex_of(s.path / "abc", UINT64_MAX));
        CHECK_FALSE(sha256_of(-1, 1));
        // Nothing to read, nothing to fail: no fd is needed for zero bytes.
        CHECK(sha256_of(-1, 0).has_value());
    }

    TEST_CASE("file_identity: sha256_of leaves the fd's offset alone") {
        scratch s;
        write_file(s.path / "abc", to_bytes("abc"));
        open_file f(s.path / "abc");
        REQUIRE(::lseek(f.fd, 2, SEEK_SET) == 2);
        auto digest = sha256_of(f.fd, 3);
        REQUIRE(digest);
        CHECK(to_hex(*digest) == sha256_abc);
        CHECK(::lseek(f.fd, 0, SEEK_CUR) == 2);
    }

    TEST_CASE("file_identity: sha256_stream in pieces equals it in one") {
        const bytes data(long_size, 'a');
        sha256_stream whole;
        whole.update(data.data(), data.size());
        const auto one = whole.finish();
        CHECK(to_hex(one) == sha256_long_a);

        sha256_stream pieces;
        std::size_t at = 0;
        for (std::size_t n = 0; at < data.size(); n = n * 3 + 1) {
            std::size_t take = std::min(n, data.size() - at);
            pieces.update(data.data() + at, take);  // zero bytes too, first
            at += take;
        }
        CHECK(pieces.finish() == one);

        sha256_stream nothing;
        CHECK(to_hex(nothing.finish()) == sha256_empty);
    }

    TEST_CASE("file_identity: to_hex is lowercase and two characters a byte") {
        sha256_digest d{};
        for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<unsigned char>(i * 8 + 7);
        CHECK(to_hex(d) == "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");
    }

    TEST_CASE("file_identity: the build-id of this test binary is the one readelf prints") {
        const auto self = this_binary();
        open_file f(self);
        const auto id = elf_build_id(f.fd, f.size());
        CHECK(elf_build_id(f.fd, f.size()) == id);
        if (auto expected = readelf_build_id(self)) {
            CHECK(hex(id) == *expected);
            // GCC on Debian links with --build-id (SHA-1): a binary without one is a
            // change of toolchain that this test should hear about.
            CHECK(id.size() == 20);
        } else {
            MESSAGE("readelf cannot be run: build-id checked for its size only");
            CHECK(id.size() == 20);
        }
    }

    TEST_CASE("file_identity: a copy of a file has its identity and the cache tells them apart") {
        scratch s;
        const auto self = this_binary();
        fs::copy_file(self, s.path / "copy");
        open_file original(self), copy(s.path / "copy");
        file_identity_cache cache;
        auto a = cache.identify(original.fd, original.status());
        auto b = cache.identify(copy.fd, copy.status());
        REQUIRE(a);
        REQUIRE(b);
        CHECK(a->sha256 == b->sha256);
        CHECK(a->build_id == b->build_id);
        CHECK(a->build_id.size() == 20);
        CHECK(cache.size() == 2);  // two inodes
        CHECK(cache.bytes_hashed() == original.size() + copy.size());
    }

    TEST_CASE("file_identity: files that are not ELF have no build-id") {
        CHECK(build_id_of({}).empty());
        CHECK(build_id_of(to_bytes("#!/bin/sh\necho hello\n")).empty());
        CHECK(build_id_of(bytes(4096, 0)).empty());
        auto wrong_class = with_build_id(true, false).data;
        wrong_class[4] = 3;
        CHECK(build_id_of(wrong_class).empty());
        auto wrong_order = with_build_id(true, false).data;
        wrong_order[5] = 0;
        CHECK(build_id_of(wrong_order).empty());
    }

    TEST_CASE("file_identity: built ELF files of either class and byte order give their build-id") {
        for (bool is64 : {false, true}) {
            for (bool msb : {false, true}) {
                CAPTURE(is64);
                CAPTURE(msb);
                CHECK(build_id_of(with_build_id(is64, msb).data) == sample_build_id());
                // After other notes, one of them a name that needs padding.
                bytes notes = note(msb, gnu, bytes(16, 1), nt_gnu_abi_tag);
                auto go = note(msb, std::string_view("Go\0", 3), bytes(5, 2), 4);
                notes.insert(notes.end(), go.begin(), go.end());
                auto id = note(msb, gnu, sample_build_id(), nt_gnu_build_id);
                notes.insert(notes.end(), id.begin(), id.end());
                CHECK(build_id_of(elf_image(is64, msb, notes).data) == sample_build_id());
                // A segment aligned to 8, its notes padded to 8 (x86-64's .note.gnu.property).
                bytes eight = note(msb, gnu, bytes(12, 3), 5, 8);
                auto id8 = note(msb, gnu, sample_build_id(), nt_gnu_build_id, 8);
                eight.insert(eight.end(), id8.begin(), id8.end());
                CHECK(build_id_of(elf_image(is64, msb, eight, 8).data) == sample_build_id());
                // A "GNU" note of another type, and another name with the build-id's type, are not it.
                bytes others = note(msb, gnu, sample_build_id(), nt_gnu_abi_tag);
                auto not_gnu = note(msb, std::string_view("GNV\0", 4), sample_build_id(), nt_gnu_build_id);
                others.insert(others.end(), not_gnu.begin(), not_gnu.end());
                CHECK(build_id_of(elf_image(is64, msb, others).data).empty());
            }
        }
        // The largest build-id allowed, and one byte more.
        CHECK(build_id_of(with_build_id(true, false, sample_build_id(64)).data) == sample_build_id(64));
        CHECK(build_id_of(with_build_id(true, false, sample_build_id(65)).data).empty());
        CHECK(build_id_of(with_build_id(true, false, {}).data).empty());
    }

    TEST_CASE("file_identity: truncated ELF headers give no build-id") {
        for (bool is64 : {false, true}) {
            CAPTURE(is64);
            const auto whole = with_build_id(is64, false).data;
            REQUIRE(build_id_of(whole) == sample_build_id());
            for (std::size_t n = 0; n < whole.size(); ++n) {
                CAPTURE(n);
                CHECK(build_id_of(bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(n))).empty());
            }
            // A file shorter than the size it is said to have.
            bytes cut(whole.begin(), whole.begin() + 40);
            CHECK(build_id_of(cut, whole.size()).empty());
        }
    }

    TEST_CASE("file_identity: program headers beyond the end give no build-id") {
        for (bool is64 : {false, true}) {
            CAPTURE(is64);
            const std::uint64_t word_max = is64 ? UINT64_MAX : UINT32_MAX;
            auto image = [&] { return with_build_id(is64, true); };
            auto size = image().data.size();

            auto e = image();
            e.put_word(e.phoff_at, size);
            CHECK(build_id_of(e.data).empty());
            e.put_word(e.phoff_at, size - 1);
            CHECK(build_id_of(e.data).empty());
            e.put_word(e.phoff_at, word_max - 8);  // the table's end overflows
            CHECK(build_id_of(e.data).empty());

            e = image();
            e.put16(e.phnum_at, 40);  // 40 headers: the table runs past the end
            CHECK(build_id_of(e.data).empty());
            e.put16(e.phnum_at, 0xffff);  // PN_XNUM
            CHECK(build_id_of(e.data).empty());
            e.put16(e.phnum_at, 0);
            CHECK(build_id_of(e.data).empty());

            e = image();
            e.put16(e.phentsize_at, is64 ? 32 : 56);  // the other class's size
            CHECK(build_id_of(e.data).empty());

            e = image();
            e.put_word(e.p_offset_at, size);
            CHECK(build_id_of(e.data).empty());
            e.put_word(e.p_offset_at, word_max);
            CHECK(build_id_of(e.data).empty());

            e = image();
            e.put_word(e.p_filesz_at, word_max);  // p_offset + p_filesz overflows
            CHECK(build_id_of(e.data).empty());
            e.put_word(e.p_filesz_at, size - e.notes_at + 1);
            CHECK(build_id_of(e.data).empty());
            // An end that wraps around to inside a file with bytes enough after the notes.
            e = image();
            e.data.resize(size + 4096);
            e.put_word(e.p_filesz_at, word_max - e.notes_at + 2);
            CHECK(build_id_of(e.data).empty());
        }
    }

    TEST_CASE("file_identity: notes whose sizes lie give no build-id") {
        for (bool is64 : {false, true}) {
            for (bool msb : {false, true}) {
                CAPTURE(is64);
                CAPTURE(msb);
                for (std::uint32_t lie : {0xffffffffu, 0xfffffffcu, 0xfffffff9u, 0x80000000u, 25u}) {
                    CAPTURE(lie);
                    auto e = with_build_id(is64, msb);
                    e.put32(e.notes_at + 4, lie);  // descsz
                    CHECK(build_id_of(e.data).empty());
                    e = with_build_id(is64, msb);
                    e.put32(e.notes_at, lie);  // namesz
                    CHECK(build_id_of(e.data).empty());
                }
                // A note that claims a huge descriptor, before the build-id: all after it is lost.
                bytes notes = note(msb, gnu, bytes(8, 0), nt_gnu_abi_tag);
                put(notes, 4, 0xfffffff0u, 4, msb);
                auto id = note(msb, gnu, sample_build_id(), nt_gnu_build_id);
                notes.insert(notes.end(), id.begin(), id.end());
                CHECK(build_id_of(elf_image(is64, msb, notes).data).empty());
            }
        }
    }

    TEST_CASE("file_identity: only the first 4 KiB of a note segment are read") {
        bytes notes = note(false, gnu, bytes(5000, 0), nt_gnu_abi_tag);
        auto id = note(false, gnu, sample_build_id(), nt_gnu_build_id);
        notes.insert(notes.end(), id.begin(), id.end());
        CHECK(build_id_of(elf_image(true, false, notes).data).empty());
        bytes small = note(false, gnu, bytes(3000, 0), nt_gnu_abi_tag);
        small.insert(small.end(), id.begin(), id.end());
        CHECK(build_id_of(elf_image(true, false, small).data) == sample_build_id());
    }

    TEST_CASE("file_identity: every byte of the headers changed gives a bounded answer") {
        for (bool is64 : {false, true}) {
            for (bool msb : {false, true}) {
                const auto whole = with_build_id(is64, msb);
                for (std::size_t at = 0; at < whole.data.size(); ++at) {
                    for (int value : {0x00, 0x01, 0x08, 0x7f, 0x80, 0xff}) {
                        auto changed = whole.data;
                        changed[at] = static_cast<unsigned char>(value);
                        auto id = build_id_of(changed);
                        if (id.size() > 64) FAIL("a build-id of " << id.size() << " bytes at " << at);
                    }
                }
            }
        }
    }

    TEST_CASE("file_identity: version_of takes the inode and its times in nanoseconds") {
        struct stat st {};
        st.st_dev = 0x0803;
        st.st_ino = 123456789;
        st.st_size = 4242;
        st.st_mtim = {1'700'000'000, 123'456'789};
        st.st_ctim = {1'700'000'001, 5};
        const auto v = version_of(st);
        CHECK(v.dev == 0x0803);
        CHECK(v.ino == 123456789);
        CHECK(v.size == 4242);
        CHECK(v.mtime_ns == 1'700'000'000'123'456'789);
        CHECK(v.ctime_ns == 1'700'000'001'000'000'005);
        auto later = st;
        later.st_ctim.tv_nsec = 6;
        CHECK_FALSE(version_of(later) == v);
    }

    TEST_CASE("file_identity: the cache reads a file once per version") {
        scratch s;
        const auto p = s.path / "file";
        write_file(p, to_bytes("abc"));
        file_identity_cache cache;
        std::optional<file_identity> first;
        {
            open_file f(p);
            first = cache.identify(f.fd, f.status());
            REQUIRE(first);
            CHECK(to_hex(first->sha256) == sha256_abc);
            CHECK(first->build_id.empty());
            CHECK(cache.bytes_hashed() == 3);
        }
        {
            open_file f(p);  // another fd, the same inode version
            auto again = cache.identify(f.fd, f.status());
            REQUIRE(again);
            CHECK(again->sha256 == first->sha256);
            CHECK(cache.bytes_hashed() == 3);
            CHECK(cache.size() == 1);
        }
        // Rewritten in place: its size, mtime and ctime change.
        write_file(p, to_bytes("ab"));
        {
            open_file f(p);
            auto rewritten = cache.identify(f.fd, f.status());
            REQUIRE(rewritten);
            CHECK(to_hex(rewritten->sha256) == sha256_ab);
            CHECK(cache.bytes_hashed() == 5);
            CHECK(cache.size() == 2);
        }
        // Only a time changes, and the content is read again (the same digest).
        {
            open_file f(p);
            const timespec times[2] = {{0, UTIME_OMIT}, {1'000'000'000, 1}};
            REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, 0) == 0);
            auto touched = cache.identify(f.fd, f.status());
            REQUIRE(touched);
            CHECK(to_hex(touched->sha256) == sha256_ab);
            CHECK(cache.bytes_hashed() == 7);
        }
    }

    TEST_CASE("file_identity: the cache forgets the least recently used beyond its capacity") {
        scratch s;
        for (auto name : {"a", "b", "c"}) write_file(s.path / name, to_bytes(std::string(10, name[0])));
        open_file a(s.path / "a"), b(s.path / "b"), c(s.path / "c");
        file_identity_cache cache(2);
        REQUIRE(cache.identify(a.fd, a.status()));
        REQUIRE(cache.identify(b.fd, b.status()));
        REQUIRE(cache.identify(a.fd, a.status()));  // a is now the more recent
        CHECK(cache.bytes_hashed() == 20);
        REQUIRE(cache.identify(c.fd, c.status()));  // b goes
        CHECK(cache.size() == 2);
        CHECK(cache.bytes_hashed() == 30);
        REQUIRE(cache.identify(a.fd, a.status()));
        CHECK(cache.bytes_hashed() == 30);
        REQUIRE(cache.identify(b.fd, b.status()));  // read again; c goes
        CHECK(cache.bytes_hashed() == 40);
        REQUIRE(cache.identify(a.fd, a.status()));
        CHECK(cache.bytes_hashed() == 40);
        REQUIRE(cache.identify(c.fd, c.status()));
        CHECK(cache.bytes_hashed() == 50);
        CHECK(cache.size() == 2);
    }

    TEST_CASE("file_identity: a cache of capacity zero answers and keeps nothing") {
        scratch s;
        write_file(s.path / "abc", to_bytes("abc"));
        open_file f(s.path / "abc");
        file_identity_cache cache(0);
        auto id = cache.identify(f.fd, f.status());
        REQUIRE(id);
        CHECK(to_hex(id->sha256) == sha256_abc);
        CHECK(cache.size() == 0);
        REQUIRE(cache.identify(f.fd, f.status()));
        CHECK(cache.bytes_hashed() == 6);
    }

    TEST_CASE("file_identity: a file that cannot be read whole has no identity and is not kept") {
        scratch s;
        write_file(s.path / "shrinks", bytes(100, 'x'));
        open_file f(s.path / "shrinks");
        const auto st = f.status();
        REQUIRE(::truncate((s.path / "shrinks").c_str(), 10) == 0);
        file_identity_cache cache;
        CHECK_FALSE(cache.identify(f.fd, st));
        CHECK(cache.size() == 0);

        int pipe_fds[2];
        REQUIRE(::pipe(pipe_fds) == 0);
        struct stat pipe_st {};
        REQUIRE(::fstat(pipe_fds[0], &pipe_st) == 0);
        CHECK_FALSE(cache.identify(pipe_fds[0], pipe_st));  // not a regular file: never read
        CHECK(cache.size() == 0);
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
    }
}
