// The pure part of restoring a child here: which new stdio ends it gets,
// how its namespace init is started, and what the init's status lines mean.
// restore.hpp does the I/O with these.
#pragma once

#include "common/run_as.hpp"

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rfork::agent {

// One new file in place of the parent's stdio: a pipe, or a terminal for a
// terminal. Files that the parent's fds 0-2 shared stay shared: one end per
// CRIU key.
struct stdio_end {
    int fd;           // the first of 0, 1, 2 with this key
    std::string key;  // what CRIU calls the file it replaces (--inherit-fd)
    bool terminal;    // a pseudo-terminal (CRIU restores its settings), else a pipe
    bool child_reads; // the child gets a pipe's read end (stdin), else its write end
    bool is_stdin;    // our end writes the child's input
    std::optional<protocol::output_stream> output;  // our end reads this output of the child
};
std::vector<stdio_end> plan_stdio(const protocol::stdio_keys& stdio);

// The fd numbers the namespace init is given: its status pipe, then the
// child's connection and stdio ends, numbered upwards in `inherit` order.
inline constexpr int status_fd_in_init = 3;

// `rfork-agent ns-init ... -- criu restore ...` (ns_init.hpp): `inherit`
// pairs each fd given to the init with the CRIU key it replaces; `as` is the
// child's user (root when nullopt); `plan_fd` the placements, if any.
std::vector<std::string> ns_init_command(const std::string& criu,
                                         const std::vector<std::pair<int, std::string>>& inherit, bool lazy,
                                         const std::optional<run_as>& as, std::optional<int> plan_fd);

// A line the namespace init writes on its status pipe (ns_init.cpp).
struct init_status {
    enum class kind {
        restored,      // "restored PID": the child runs, PID in its namespace
        exited,        // "exited STATUS": the child ended, its wait status
        failed,        // "failed WHY": the init could not get as far as CRIU
        criu_failed,   // "criu-failed STATUS": CRIU failed; its log says why
        files_failed,  // "files-failed WHY": the child's files could not be placed
        none,          // the init ended without a word, or said something else
    };
    kind what = kind::none;
    std::string text;  // WHY
    int number = 0;    // PID or STATUS
};
init_status parse_init_status(std::string_view line);

// Why a restore failed, as the sending agent is told, from the init's
// status and the line of CRIU's log that says why (`criu_said`).
std::pair<std::error_code, std::string> restore_failure(const init_status& status, const std::string& criu_said);

}  // namespace rfork::agent
