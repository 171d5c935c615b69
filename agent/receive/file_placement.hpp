// Where a child finds the files its image names, on a host that lacks them
// or holds them in another version. The receiving agent decides, file by
// file, from the sender's manifest: this host's own file (the same version
// at the same path), an entry of its file cache (file_cache.hpp), or one to
// ask the sender for. The child's namespace init then puts every file that
// is not the host's own at its original path, in the child's own mount
// namespace: a read-only bind mount of the cache entry over the host's
// other version, or, where the path does not exist here, in a tmpfs of the
// child's that shows everything the host's directory holds besides. The
// host's own files and directories are never written. Once anything is
// placed, the whole namespace is nosuid: nothing from a peer, nor any
// set-id program of the host reading it, runs with more rights than the child.
#pragma once

#include "receive/file_cache.hpp"
#include "common/file_identity.hpp"

#include <rfork/protocol.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace rfork::agent {

// One step of the child's namespace init, in order of path.
struct placement {
    enum class action : std::uint8_t {
        bind_file = 1,  // `source` (a cache entry), read-only, at `path`
        copy_file = 2,  // a private copy of `source` at `path`: the child writes into it
        make_dir = 3,   // an empty directory of its own at `path`
    };
    action what = action::bind_file;
    std::string path;
    std::string source;
    std::uint32_t mode = 0, uid = 0, gid = 0;  // of a directory or a copy
    std::int64_t mtime_ns = 0;                 // of a copy
};

struct placement_plan {
    std::vector<placement> steps;
    // An empty directory of the agent's (in the job) where a tmpfs is
    // filled before it takes the place of a directory of the host.
    std::string stage;
};

std::vector<unsigned char> encode_plan(const placement_plan& plan);
std::optional<placement_plan> decode_plan(std::span<const unsigned char> bytes);

struct file_limits {
    std::uint64_t max_file_size = 0;  // --max-file-size: larger files do not travel
};

// The receiving agent's answer to a manifest.
struct file_decision {
    std::vector<std::uint32_t> wanted;  // manifest indices to ask for, ascending
    std::uint64_t wanted_bytes = 0;
    std::vector<std::uint32_t> cached;  // manifest indices found in the cache
    std::vector<std::uint32_t> missing_dirs;  // directories this host lacks
    std::size_t host_own = 0;           // files this host has as they are
    std::optional<std::string> refusal; // why the fork cannot go on (names the file)
};

// How this host sees a manifest's files: its own, cached, or wanted. The
// host's files are looked at as CRIU will open them (following links);
// their identity is the build-id where both sides have one (what CRIU
// checks), else the content's SHA-256.
file_decision decide_files(const protocol::file_manifest& manifest, file_cache& cache,
                           file_identity_cache& host_files, const file_limits& limits);

// The cache entry of a regular file of the manifest.
cache_key key_of(const protocol::file_description& file);

// The steps that put the manifest's cached (or just received) files and
// missing directories in place: every file the decision did not find here.
placement_plan plan_placements(const protocol::file_manifest& manifest, const file_decision& decision,
                               const file_cache& cache, std::string stage);

// Carries out `plan` in the calling process's mount namespace, which must
// be its own and private; returns why it could not, or empty. For the
// child's namespace init only: it runs as root, before /proc is mounted.
std::string carry_out(const placement_plan& plan);

}  // namespace rfork::agent
