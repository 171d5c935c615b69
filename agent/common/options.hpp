// The agent's command line.
#pragma once

#include <rfork/endpoint.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rfork::agent {

struct limits {
    std::chrono::seconds handshake_timeout{10};  // from accept to a whole request or image header
    std::chrono::seconds idle_timeout{60};       // between two frames of an image
    // From an image's start to its end, and for a lazy fork's memory after
    // its restore: a trickle just within the idle timeout holds nothing forever.
    // An hour takes 1 GiB at 2.4 Mbit/s.
    std::chrono::seconds image_timeout{3600};
    std::uint64_t max_image_size = 16ull << 30;  // bytes of image files in one fork
    unsigned max_restores = 32;                  // images being received or restored at once
    // Connections from other agents not yet through TLS and their handshake:
    // in all, and from one source address (an IPv6 one: its /64).
    unsigned max_pending_connections = 64;
    unsigned max_pending_per_source = 16;
    std::uint64_t max_image_files = 16384;       // files in one image: each costs an inode, empty or not
    unsigned max_children = 64;                  // children restored here and not yet ended
    // Each child's cgroup (child_cgroup.hpp); 0: no limit of its own.
    std::uint64_t child_max_pids = 1024;         // its tasks, threads and its namespace's init included
    std::uint64_t child_max_memory = 4ull << 30; // bytes of its memory and swap
    // Files a process uses that this host lacks (file_cache.hpp): the largest
    // that may travel, and all that the cache keeps.
    std::uint64_t max_file_size = 1ull << 30;
    std::uint64_t file_cache_size = 4ull << 30;
};

struct options {
    rfork::endpoint listen{"127.0.0.1", 7000};  // where other agents reach this one
    std::string secret_file;                    // shared secret: TLS between agents
    std::string cert, key, ca;                  // or certificates; with neither, loopback only
                                                // and the host's own secret (local_secret_path)
    bool allow_root = false;                    // restore processes that run as uid 0
    std::vector<std::uint32_t> allow_uids;      // if not empty: the only other uids restored
    std::vector<std::uint32_t> local_users;     // uids besides root that may use the local socket
    std::string socket_path;                    // where local programs reach it
    std::string criu;                           // empty: search, see criu.hpp
    std::string work_dir = "/run/rfork/work";
    std::string file_cache = "/var/cache/rfork/files";  // files other agents sent (file_cache.hpp)
    bool lazy_pages = true;                     // memory after the child starts, when possible
    bool allow_unlimited_children = false;      // start without cgroups for children if none can be made
    std::string name;                           // host name told to peers; empty: gethostname()
    int ready_fd = -1;                          // write "ready\n" here once listening
    std::string event_log;                      // append events (common/events.hpp) here
    int event_fd = -1;                          // or write them to this fd
    struct limits limits;
};

// Whether `host` (a numeric address) only reaches this machine.
bool is_loopback(const std::string& host);

// The longest path a local socket may have: sockaddr_un's sun_path, less its NUL.
inline constexpr std::size_t max_socket_path = 107;

// The agent's long options by name, without their dashes.
enum class option_kind { unknown, flag, takes_value };
option_kind kind_of_option(std::string_view name);

// Why options were refused, and the command that fixes it when there is one.
struct options_error {
    std::string what;
    std::string fix;
};

// An option that once was and is no more (`name` without its dashes, as in a
// config file): why, and what to do instead; nullopt for any other name.
std::optional<options_error> removed_option(std::string_view name);

// Parses `rfork-agent [OPTIONS]` (agent_command_line.hpp), reading each
// --config FILE where it stands (so options after it override its values); on
// bad input returns nullopt and sets `error`. `rfork-agent doctor` may leave
// --listen out.
std::optional<options> parse_options(const std::vector<std::string>& args, options_error& error,
                                     bool listen_required = true);

// The checks of the options as a whole, once each is known good: why they
// cannot go together, or nullopt.
std::optional<options_error> check_options(const options& o);

// A local socket's path: empty when `path` can be one, or why not.
std::string socket_path_problem(const std::string& path);

}  // namespace rfork::agent
