// Child processes of the agent (CRIU, namespace inits), waited for without
// blocking the agent: each is watched through a pidfd.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rfork::agent {

struct run_as;

// Owns a file descriptor.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) reset(std::exchange(other.fd_, -1));
        return *this;
    }
    ~unique_fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

struct pipe_pair {
    unique_fd read, write;
};

// A pipe, both ends close-on-exec. Throws std::system_error.
pipe_pair make_pipe();

// A child fd: the child gets `source` (an fd of the agent) as `target`.
struct fd_mapping {
    int source;
    int target;
};

struct child_process {
    pid_t pid = -1;
    unique_fd pidfd;
};

// Starts argv[0] (a path) with the given fds, every other fd closed and
// stdin/stdout/stderr on /dev/null unless mapped. `namespaces` are clone(2)
// flags such as CLONE_NEWPID: the child is then the first process of them.
// With `as`, the program runs with that identity (see run_as.hpp); a child
// that cannot take it exits with status 126 before exec. With `join` (a
// pidfd), the program runs in that process's pid, mount and IPC namespaces: the
// child joins them, forks the program there (killed with it) and exits with
// its status, or with 125 if that process has ended. `cgroups`: fds of
// cgroup.procs files (not with `join`); the child joins each before anything
// else, or exits with status 126.
// Throws std::system_error.
child_process spawn(const std::vector<std::string>& argv, const std::vector<fd_mapping>& fds,
                    int namespaces = 0, const run_as* as = nullptr, int join = -1,
                    const std::vector<int>& cgroups = {});

// Waits for the child to end and reaps it; returns its wait status.
asio::awaitable<int> wait_for_exit(child_process& child);

// The same, but a child still running after `bound` is killed (and reaped):
// nullopt then. A CRIU that runs as a user can be stopped by that user.
asio::awaitable<std::optional<int>> wait_for_exit(child_process& child, std::chrono::steady_clock::duration bound);

// Kills `pidfd`'s process when `bound` has passed, unless cancelled first:
// `fired()` tells which. It holds its own copy of the pidfd.
class deadline {
public:
    deadline(const asio::any_io_executor& ex, int pidfd, std::chrono::steady_clock::duration bound);
    ~deadline();
    bool fired() const { return *fired_; }

private:
    std::shared_ptr<bool> fired_;
    std::shared_ptr<asio::steady_timer> timer_;
};

// How long CRIU may take for `bytes` of memory: the idle timeout, and one
// second more for every 64 MiB.
std::chrono::steady_clock::duration criu_time_bound(std::chrono::seconds idle_timeout, std::uint64_t bytes);

// Waits until `fd` (a pidfd, say) is really readable. Asio's async_wait can
// complete for a readiness event that was meant for an fd closed just before
// and whose slot the new one reuses, so readiness is checked with poll(2).
// Takes ownership of `fd`; returns early only if the agent is stopping.
asio::awaitable<void> wait_readable(unique_fd fd);

// Whether the process behind `pidfd` has ended (never blocks). Its pid may
// then name another process already.
bool has_exited(int pidfd);

// "exit code N" or "killed by signal S" for a wait status.
std::string describe_wait_status(int status);

// Exit code, or 128 + signal number, as a shell reports it.
int shell_status(int status);

}  // namespace rfork::agent
