// Running CRIU: where it is, how it is called to dump and restore, and what it
// said when it failed.
#pragma once

#include <rfork/protocol.hpp>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rfork::agent {

// --criu, else $RFORK_CRIU, else the CRIU that scripts/setup built for this
// source tree, else <agent dir>/../libexec/rfork/criu, else criu on PATH.
// Returns an empty string when none exists.
std::string find_criu(const std::string& configured, const std::string& self_exe);

// A program on PATH (or the usual system directories), or empty.
std::string find_program(const std::string& name);

// Files the process has open on stdin, stdout and stderr, as CRIU names them.
struct stdio_files {
    protocol::stdio_keys keys;          // for --inherit-fd on restore
    std::vector<std::string> externals; // for --external on dump (ttys, unix sockets)
};

// Looks at /proc/PID/fd/{0,1,2}.
stdio_files inspect_stdio(int pid);

std::vector<std::string> dump_command(const std::string& criu, int pid, const std::string& images_dir,
                                      const std::string& log_file, std::uint64_t socket_inode,
                                      const std::vector<std::string>& externals, bool tcp_connections,
                                      bool leave_running);

// `inherit` pairs an fd number (as criu will have it) with the CRIU key it replaces.
std::vector<std::string> restore_command(const std::string& criu, const std::string& images_dir,
                                         const std::string& log_file, const std::string& pid_file,
                                         const std::vector<std::pair<int, std::string>>& inherit);

// The line of CRIU's log that says why it failed, without its timestamp.
std::string criu_error_line(const std::string& log_file);

// Copies CRIU's error and warning lines into the agent's log, for operators:
// the log file itself goes away with its job.
void log_criu_failure(const std::string& log_file);

}  // namespace rfork::agent
