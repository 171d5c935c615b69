// The receiving agent's store of files that other agents sent: programs,
// libraries and data files that this host lacks or holds in another version.
// An entry is named by what it is, never by what a peer called it: its
// content's SHA-256 (checked as it arrives) and the mode and owner the child
// sees. It is written once and never changed, and the least recently used
// go when the store passes its size (--file-cache-size). A child sees its
// entries at their original paths, in its own mount namespace only
// (file_placement.hpp); an entry removed meanwhile stays in use there.
#pragma once

#include "common/file_identity.hpp"
#include "common/process.hpp"

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace rfork::agent {

struct cache_key {
    sha256_digest sha256{};
    std::uint32_t mode = 0;  // permission bits, set-id bits never
    std::uint32_t uid = 0, gid = 0;
    friend auto operator<=>(const cache_key&, const cache_key&) = default;
};

// "<sha256 hex>-<mode octal>-<uid>-<gid>": the entry's file name.
std::string entry_name(const cache_key& key);

class file_cache {
public:
    // The store in `dir`, made (root's, 0700) once a file arrives; refused
    // (throws std::runtime_error) if it is a link or not root's alone. What
    // it holds already is kept, the oldest first to go.
    file_cache(std::string dir, std::uint64_t capacity);

    const std::string& dir() const { return dir_; }
    std::uint64_t capacity() const { return capacity_; }
    std::uint64_t size() const { return size_; }  // bytes of all entries

    // Whether it holds `key`; a hit counts as a use.
    bool has(const cache_key& key);
    // The path of an entry it holds.
    std::string path_of(const cache_key& key) const { return dir_ + "/" + entry_name(key); }

    // Entries in use by a restore are not evicted until released; false if
    // it holds no such entry (then there is nothing to release).
    bool pin(const cache_key& key);
    void unpin(const cache_key& key);

    // One entry arriving: its bytes, hashed as written, in an unnamed file
    // of the store; `finish` names it only if they are whole and their hash
    // is the key's.
    class incoming {
    public:
        incoming(file_cache& cache, cache_key key, std::uint64_t size, std::int64_t mtime_ns);
        incoming(incoming&&) = default;
        // Why the bytes cannot be stored, or empty.
        std::string write(const unsigned char* data, std::size_t size);
        std::uint64_t missing() const { return size_ - written_; }
        // Empty once the entry is in the store, else why not (it then leaves nothing).
        std::string finish();

    private:
        file_cache* cache_;
        cache_key key_;
        std::uint64_t size_, written_ = 0;
        std::int64_t mtime_ns_;
        unique_fd fd_;
        std::unique_ptr<sha256_stream> hash_;
        std::string problem_;  // why there is no file to write
    };

private:
    struct entry {
        std::uint64_t size = 0;
        unsigned pins = 0;
        std::list<cache_key>::iterator use;  // in uses_
    };
    void touch(std::map<cache_key, entry>::iterator it);
    void add(const cache_key& key, std::uint64_t size);
    void evict();
    // The store's directory, checked, for one operation (no descriptor is
    // kept between them); empty with `error` set if it cannot be.
    unique_fd open_dir(bool create, std::string& error) const;

    std::string dir_;
    std::uint64_t capacity_, size_ = 0;
    std::map<cache_key, entry> entries_;
    std::list<cache_key> uses_;  // most recently used first
};

// The key named by an entry's file name, or nullopt for any other name.
std::optional<cache_key> parse_entry_name(const std::string& name);

}  // namespace rfork::agent
