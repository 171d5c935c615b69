// Running CRIU: where it is, how it is called to dump and restore, and what it
// said when it failed.
#pragma once

#include <rfork/protocol.hpp>

#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rfork::agent {

// --criu, else $RFORK_CRIU, else the CRIU shipped beside the agent
// (<agent dir>/../libexec/rfork/criu, in an install and in the build tree
// alike), else criu on PATH.
// Returns an empty string when none exists.
std::string find_criu(const std::string& configured, const std::string& self_exe);

// Files the process has open on stdin, stdout and stderr, as CRIU names them.
struct stdio_files {
    protocol::stdio_keys keys;          // for --inherit-fd on restore
    std::vector<std::string> externals; // for --external on dump (ttys, unix sockets)
};

// Looks at /proc/PID/fd/{0,1,2}.
stdio_files inspect_stdio(int pid);

// Every command names its directories and files as criu_workspace.hpp lays
// them out: images and work through inherited fds, the log in work/.
inline constexpr const char* dump_log = "dump.log";
inline constexpr const char* restore_log = "restore.log";
inline constexpr const char* lazy_pages_log = "lazy-pages.log";
inline constexpr const char* restored_pid_file = "restored.pid";

struct dump_request {
    int pid = 0;
    bool unprivileged = false;           // CRIU runs as the process's user
    std::uint64_t socket_inode = 0;      // the process's socket to its agent
    std::vector<std::string> externals;  // from inspect_stdio
    bool tcp_connections = false;
    bool leave_running = true;           // the caller is the parent; a snapshot dies once dumped
    // Lazy pages: CRIU's fds for the page-server conversation and for
    // "ready" (images written, pages to be served); -1 for a whole image.
    int lazy_ps_socket = -1, lazy_status_fd = -1;
};

std::vector<std::string> dump_command(const std::string& criu, const dump_request& request);

// `inherit` pairs an fd number (as criu will have it) with the CRIU key it
// replaces. `unprivileged`: CRIU runs as the image's user.
std::vector<std::string> restore_command(const std::string& criu,
                                         const std::vector<std::pair<int, std::string>>& inherit, bool lazy,
                                         bool unprivileged);

// The daemon that fetches a lazily restored child's pages through the fd
// `ps_socket` and says "ready" on `status_fd` (for root's children only:
// CRIU 4.2 has no lazy pages as a user).
std::vector<std::string> lazy_pages_command(const std::string& criu, int ps_socket, int status_fd);

// Why lazy pages cannot work on this host (no userfaultfd, or pipes smaller
// than CRIU's page pipes without CAP_SYS_RESOURCE), or empty.
std::string lazy_pages_problem();

// The line of CRIU's log that says why it failed, without its timestamp.
std::string criu_error_line(std::string_view log);

// Logs `heading` and the error and warning lines of CRIU's log `name` in the
// work directory `work_fd`, for operators (the log goes away with its job);
// returns the line that says why.
std::string log_criu_failure(std::string_view heading, int work_fd, const std::string& name);

}  // namespace rfork::agent
