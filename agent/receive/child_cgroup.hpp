// A cgroup of its own for each restored child: its whole process tree,
// including what it forks later, is held to a number of tasks and an amount
// of memory (--child-max-pids, --child-max-memory).
//
// The agent finds its own cgroup at start (/proc/self/cgroup, /proc/self/
// mountinfo) and makes the children's next to itself: on cgroup v2, where a
// cgroup with children may hold no process ("no internal processes"), the
// agent first moves into a leaf of its own (rfork-agent) and enables the
// pids and memory controllers for its cgroup's children; on a v1 hierarchy
// (pids and memory mounted apart) the children's cgroups go under the
// agent's in each. Every child's cgroup is named rfork-child-ID.
//
// The namespace init joins the cgroup before it runs anything (spawn's
// `cgroups`), so every process of the child, CRIU's restore included, is
// counted from its first instruction; CRIU runs with --manage-cgroups=ignore,
// so nothing the image says moves a process elsewhere.
#pragma once

#include "common/process.hpp"

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace rfork::agent {

struct child_limits {
    std::uint64_t max_pids = 0;    // tasks (threads count), the namespace init included; 0: none
    std::uint64_t max_memory = 0;  // bytes of memory (and swap); 0: none
};

// Where children's cgroups are made, found once at start.
struct cgroup_parent {
    bool v2 = false;
    // v2: the agent's cgroup; v1: its cgroup in the pids and memory
    // hierarchies (one directory where they are mounted together)
    std::vector<std::string> dirs;
    bool swap_limited = true;  // whether a child's swap is limited too (v1 kernels may not account it)

    std::string describe() const;
};

// Finds the agent's cgroup in a hierarchy with the pids and memory
// controllers, changing nothing (doctor): the parent, or why there is none.
std::variant<cgroup_parent, std::string> find_cgroup_parent();

// Finds the agent's cgroup and prepares it for children (on v2 this moves
// the agent into its leaf and enables the controllers): the parent, or why
// there is none usable. Removes empty leftovers of an earlier agent, and
// makes (and removes) one child's cgroup to be sure they can be made.
std::variant<cgroup_parent, std::string> prepare_cgroup_parent();

// One child's cgroup, made with its limits; removed (if empty) when it goes.
class child_cgroup {
public:
    // Throws std::system_error when the cgroup cannot be made or limited.
    child_cgroup(const cgroup_parent& parent, const std::string& id, const child_limits& limits);
    child_cgroup(const child_cgroup&) = delete;
    child_cgroup& operator=(const child_cgroup&) = delete;
    ~child_cgroup();

    // cgroup.procs of each directory, open for writing: a process that
    // writes "0" to each joins the cgroup (see spawn).
    std::vector<int> procs_fds() const;
    // Closes those fds once the namespace init has joined: each lets whoever
    // holds it move any process in.
    void close_procs() { procs_.clear(); }
    // Removes it: 0, or the errno of the first directory that stays (EBUSY
    // while a process of it has not quite ended). Once gone, a no-op.
    int remove();
    // Kills every process in it (cgroup v2; v1 has no such file): only for
    // a child whose pid namespace has ended, where none should be left.
    void kill_all();
    // False where the kernel does not account swap (a v1 memory controller
    // without memsw): memory beyond the limit may then go to swap.
    bool swap_limited() const { return swap_limited_; }
    std::string path() const;  // its first directory, for the log

private:
    std::vector<std::string> dirs_;
    std::vector<unique_fd> procs_;
    bool v2_ = false;
    bool swap_limited_ = true;
};

}  // namespace rfork::agent
