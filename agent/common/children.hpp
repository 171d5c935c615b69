// What an agent remembers of children: those its local programs forked
// elsewhere (to wait for and signal them), and those running here (to list
// and kill them). Each record goes as soon as nobody can ask for it.
#pragma once

#include "common/one_shot_event.hpp"
#include "common/process.hpp"

#include <asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace rfork::agent {

// A child of a program of this host, running on another host.
struct forked_child {
    explicit forked_child(const asio::any_io_executor& ex) : ended(ex) {}

    std::string id;
    std::string host;
    int parent_pid = 0;
    unsigned parent_uid = 0;
    std::optional<int> status;          // exit code or 128 + signal, once it ended
    std::error_code lost;               // set if its host went silent before telling
    one_shot_event ended;               // set when the child ends: wakes every waiter
    std::function<void(int)> signal;    // relays a signal while it runs

    bool finished() const { return status || lost; }
};

// A child restored on this host.
struct hosted_child {
    std::string id;
    std::string origin;
    std::uint32_t pid = 0;   // in its own pid namespace
    int init_pid = 0;        // its namespace's pid 1, in ours
    // With lazy pages: set once all of its memory is here (or never will be).
    std::shared_ptr<one_shot_event> memory_here;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

template <typename Child>
class child_table {
public:
    // A record never replaces another: false if its id is taken.
    bool add(std::shared_ptr<Child> child) { return children_.emplace(child->id, std::move(child)).second; }
    std::shared_ptr<Child> find(const std::string& id) const {
        auto it = children_.find(id);
        return it == children_.end() ? nullptr : it->second;
    }
    void remove(const std::string& id) { children_.erase(id); }
    const std::map<std::string, std::shared_ptr<Child>>& all() const { return children_; }

private:
    std::map<std::string, std::shared_ptr<Child>> children_;
};

// The host pid of the restored process under a namespace init, or -1. Only a
// hint: that process may end and its pid be reused at once.
int restored_process_of(int init_pid);

// Sends `signal` to the restored process under the namespace init `init_pid`
// (a child of this agent, not yet reaped: a hosted record's), whose pid in
// its own namespace is `pid_inside`. The process is named by a pidfd, and
// found after it was taken still to be that init's child with that pid: a
// pid reused meanwhile, or a process orphaned to the init once the restored
// one has ended, is never signalled. Returns 0 or an errno (ESRCH when it,
// or its init, has ended).
int signal_restored_process(int init_pid, std::uint32_t pid_inside, int signal);

}  // namespace rfork::agent
