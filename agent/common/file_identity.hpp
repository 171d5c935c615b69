// What makes two files the same file wherever they are: their content's
// SHA-256, and the ELF build-id where they have one (what CRIU checks on
// restore). Computing a hash reads the whole file, so results are kept per
// inode version (device, inode, size, mtime and ctime): the second fork of a
// program reads none of its files again.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rfork::agent {

using sha256_digest = std::array<unsigned char, 32>;

// Lowercase hex of a digest: 64 characters.
std::string to_hex(const sha256_digest& digest);

struct file_identity {
    sha256_digest sha256{};
    std::vector<unsigned char> build_id;  // empty: none (not ELF, or no NT_GNU_BUILD_ID note)
};

// Incremental SHA-256 (OpenSSL's EVP), for bytes arriving in pieces.
class sha256_stream {
public:
    sha256_stream();
    ~sha256_stream();
    sha256_stream(const sha256_stream&) = delete;
    sha256_stream& operator=(const sha256_stream&) = delete;
    void update(const unsigned char* data, std::size_t size);
    sha256_digest finish();  // once

private:
    void* ctx_;  // EVP_MD_CTX
};

// The SHA-256 of the `size` bytes of the regular file open at `fd`, read
// with pread from offset 0 (the fd's offset is left alone); nullopt if it
// cannot be read whole (short file, I/O error).
std::optional<sha256_digest> sha256_of(int fd, std::uint64_t size);

// The NT_GNU_BUILD_ID note of the ELF file at `fd` (32- or 64-bit, either
// byte order), read with pread; empty if it is not ELF or has none. The file
// may be hostile: every offset and size is checked against `size`, at most
// 64 program headers and 4 KiB of notes per segment are read, a build-id is
// at most 64 bytes.
std::vector<unsigned char> elf_build_id(int fd, std::uint64_t size);

// Which version of an inode a result belongs to.
struct inode_version {
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
    friend bool operator==(const inode_version&, const inode_version&) = default;
};
inode_version version_of(const struct stat& st);

// Identities of recently seen files, at most `capacity` of them, the least
// recently used forgotten first.
class file_identity_cache {
public:
    explicit file_identity_cache(std::size_t capacity = 4096) : capacity_(capacity) {}

    // The identity of the regular file at `fd` whose fstat is `st`: from
    // memory when this inode version was seen before, else read (and kept).
    // nullopt if the file cannot be read whole.
    std::optional<file_identity> identify(int fd, const struct stat& st);

    std::size_t size() const { return entries_.size(); }
    std::uint64_t bytes_hashed() const { return bytes_hashed_; }  // read for hashing so far

private:
    struct key_hash {
        std::size_t operator()(const inode_version& v) const;
    };
    using entry = std::pair<inode_version, file_identity>;
    std::size_t capacity_;
    std::list<entry> entries_;  // most recently used first
    std::unordered_map<inode_version, std::list<entry>::iterator, key_hash> index_;
    std::uint64_t bytes_hashed_ = 0;
};

}  // namespace rfork::agent
