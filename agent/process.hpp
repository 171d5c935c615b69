// Child processes of the agent (CRIU, namespace inits), waited for without
// blocking the agent: each is watched through a pidfd.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <sys/types.h>

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
// that cannot take it exits with status 126 before exec.
// Throws std::system_error.
child_process spawn(const std::vector<std::string>& argv, const std::vector<fd_mapping>& fds,
                    int namespaces = 0, const run_as* as = nullptr);

// Waits for the child to end and reaps it; returns its wait status.
asio::awaitable<int> wait_for_exit(child_process& child);

// Waits until `fd` (a pidfd, say) is really readable. Asio's async_wait can
// complete for a readiness event that was meant for an fd closed just before
// and whose slot the new one reuses, so readiness is checked with poll(2).
// Takes ownership of `fd`; returns early only if the agent is stopping.
asio::awaitable<void> wait_readable(unique_fd fd);

// "exit code N" or "killed by signal S" for a wait status.
std::string describe_wait_status(int status);

// Exit code, or 128 + signal number, as a shell reports it.
int shell_status(int status);

}  // namespace rfork::agent
