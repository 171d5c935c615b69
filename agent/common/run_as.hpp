// The identity a CRIU takes when the process it checkpoints or restores is
// not root's: that user's ids, and only the capabilities CRIU cannot do
// without. The kernel then refuses whatever that user could not do: dump a
// process of someone else, restore with other ids, open files it may not.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <linux/capability.h>

namespace rfork::agent {

struct run_as {
    std::uint32_t uid = 0, gid = 0;
    std::vector<std::uint32_t> groups;  // supplementary
    std::uint64_t capabilities = 0;     // bits (1 << CAP_X), kept across exec as ambient capabilities

    static constexpr std::uint64_t bit(int capability) { return std::uint64_t{1} << capability; }
    friend bool operator==(const run_as&, const run_as&) = default;
};

// What CRIU needs besides the user's own rights: CAP_CHECKPOINT_RESTORE
// always (CRIU refuses to start as a user without it; it covers the restored
// pids and /proc/PID/map_files); CAP_SETPCAP, on restore, to give the
// process the bounding set its image names (which the image gate requires to
// hold all of this host's: CRIU then drops only what is absent here
// already). A restored process keeps
// neither: the image gate admits only images whose capability sets are
// empty, and CRIU sets exactly those. (CRIU 4.2 has no lazy pages as a user:
// a user's process is sent whole.)
inline constexpr std::uint64_t criu_capabilities = run_as::bit(CAP_CHECKPOINT_RESTORE);
inline constexpr std::uint64_t criu_restore_capabilities = criu_capabilities | run_as::bit(CAP_SETPCAP);

// Takes that identity in this process: groups, gids, uids, then exactly
// `capabilities` as permitted, effective, inheritable and ambient sets, so
// that a program it execs keeps them and nothing else. Only async-signal-safe
// calls: it runs between fork and exec. Returns 0, or the errno of the step
// that failed.
int become(const run_as& who);

// Drops every capability of this process (ambient ones included): a process
// that has taken a user's identity keeps no more than that user has.
int drop_capabilities();

// "UID:GID:G1,G2:CAPS" (CAPS in hex), for the agent's own helper processes.
std::string to_argument(const run_as& who);
std::optional<run_as> from_argument(std::string_view text);

}  // namespace rfork::agent
