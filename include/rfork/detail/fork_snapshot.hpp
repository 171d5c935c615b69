// A fork through a snapshot: this process fork()s a copy-on-write copy of
// itself, which waits on one end of a socket pair, and asks the agent to
// checkpoint that copy. The caller is held up only for its local fork(). The
// agent dumps a snapshot only when it is a child of the process asking, and
// CRIU ends it once dumped (with lazy pages: once all of its memory has gone
// to the child's host).
#pragma once

#include <rfork/detail/fork_conversation.hpp>
#include <rfork/detail/pidfd.hpp>
#include <rfork/protocol.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/execution/context.hpp>
#include <asio/execution_context.hpp>
#include <asio/query.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace rfork::detail {

// Snapshots not reaped yet: CRIU ends a snapshot once it is dumped, or, with
// lazy pages, once the child's host has all of its memory, which may be
// after fork_remote returns. They are reaped without waiting (WNOHANG) then
// and at the next fork_remote; until then an ended one is a zombie. No fd
// watches them: the next snapshot would inherit it, and CRIU cannot dump an
// fd that names a process outside the dump.
struct unreaped_snapshots {
    std::mutex lock;  // a multi-threaded program may call fork_remote from several threads
    std::vector<pid_t> pids;

    static unreaped_snapshots& all() {
        static unreaped_snapshots instance;
        return instance;
    }
    void add(pid_t pid) {
        std::lock_guard hold(lock);
        pids.push_back(pid);
    }
    void reap() {
        std::lock_guard hold(lock);
        std::erase_if(pids, [](pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) != 0; });
    }
};

// The two ends of the socket pair: the parent's, and the snapshot's (its
// agent connection, which CRIU replaces in the restored child). Each side
// closes the other's end once forked; whatever is left is closed at the end.
struct snapshot_socket_pair {
    int parent_end = -1;
    int snapshot_end = -1;

    snapshot_socket_pair() {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0) parent_end = pair[0], snapshot_end = pair[1];
    }
    snapshot_socket_pair(const snapshot_socket_pair&) = delete;
    snapshot_socket_pair& operator=(const snapshot_socket_pair&) = delete;
    ~snapshot_socket_pair() {
        close(parent_end);
        close(snapshot_end);
    }
    static void close(int& fd) {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

// The snapshot, seen from the parent. On every way out of fork_snapshot that
// does not hand it over (a failure, an exception) the snapshot is killed,
// through its pidfd, and reaped: never left frozen in its read(). A failed
// fork() (pid -1) leaves it nothing to do.
class snapshot_guard {
public:
    explicit snapshot_guard(pid_t pid)
        : pid_(pid), pidfd_(pid > 0 ? open_pidfd(pid) : -1), pidfd_errno_(pidfd_ < 0 ? errno : 0) {}
    snapshot_guard(const snapshot_guard&) = delete;
    snapshot_guard& operator=(const snapshot_guard&) = delete;
    ~snapshot_guard() {
        if (pid_ > 0) {
            // Without a pidfd the pid is as sure: our child's pid is not reused before we reap it.
            if (pidfd_ < 0 || signal_pidfd(pidfd_, SIGKILL) != 0) ::kill(pid_, SIGKILL);
            while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        // Names the snapshot to the agent; gone before the next snapshot.
        if (pidfd_ >= 0) ::close(pidfd_);
    }

    int pidfd() const { return pidfd_; }
    int pidfd_errno() const { return pidfd_errno_; }

    // Its child runs: from now on the snapshot is CRIU's to end, and ours to
    // reap without waiting.
    void hand_over() {
        auto pid = std::exchange(pid_, -1);
        unreaped_snapshots::all().add(pid);
        unreaped_snapshots::all().reap();
    }

private:
    pid_t pid_;
    int pidfd_;
    int pidfd_errno_;
};

// In the snapshot: blocks in read() until CRIU has dumped it (and killed it),
// or, in the restored child, reads the child's answer. No event loop runs in
// the snapshot, so none of the parent's pending work happens twice.
inline fork_outcome wait_as_snapshot(int fd, const std::string& path) {
    protocol::stream_decoder decoder(true, protocol::max_control_payload);
    std::array<unsigned char, 4096> buffer{};
    for (;;) {
        switch (decoder.next()) {
        case protocol::stream_decoder::result::handshake:
            if (decoder.peer().who != protocol::role::agent)
                return fork_failure(errc::unexpected_role, "the peer at " + path + " is not an rfork agent");
            continue;
        case protocol::stream_decoder::result::frame:
            return outcome_of(decoder.last_frame().type, decoder.last_frame().payload, path);
        case protocol::stream_decoder::result::error:
            return fork_failure(decoder.error(), "bad answer from the agent at " + path + ": " +
                                                     decoder.error().message());
        case protocol::stream_decoder::result::need_more: break;
        }
        auto n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EAGAIN) {  // the socket that replaces ours in the child may be non-blocking
            pollfd ready{fd, POLLIN, 0};
            ::poll(&ready, 1, -1);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fork_failure(errc::agent_lost, "the agent at " + path + " closed the connection without an answer");
        decoder.feed(std::span(buffer.data(), static_cast<std::size_t>(n)));
    }
}

// The snapshot's life right after fork(): an event loop of its own (the
// parent's epoll is not this process's to dump), a session of its own (CRIU
// needs the leader of the session inside the dump or in the same pid
// namespace), then the wait. Returns only in the restored child; a snapshot
// that cannot become one ends at once, and the parent reads the end of the
// socket instead of its byte.
// An exception ends it too: a copy of the caller must never run on as one.
inline fork_outcome run_as_snapshot(asio::execution_context& context, snapshot_socket_pair& pair,
                                    const std::string& path) {
    fork_outcome outcome;
    try {
        context.notify_fork(asio::execution_context::fork_child);
        ::setsid();
        snapshot_socket_pair::close(pair.parent_end);
        // The session exists before the agent looks at it: the parent waits for this.
        const char made = 's';
        if (::write(pair.snapshot_end, &made, 1) != 1) ::_exit(127);
        outcome = wait_as_snapshot(pair.snapshot_end, path);
    } catch (...) {
        ::_exit(127);
    }
    snapshot_socket_pair::close(pair.snapshot_end);
    // Only the restored child gets past here; the snapshot never runs on.
    if (!outcome.result.is_child()) ::_exit(0);
    return outcome;
}

// Until the snapshot has its own session (setsid, its first step), the agent
// would find it in ours, which CRIU may be unable to checkpoint.
inline bool snapshot_has_session(int parent_end) {
    char made = 0;
    ssize_t got = 0;
    while ((got = ::read(parent_end, &made, 1)) < 0 && errno == EINTR) {
    }
    return got == 1;
}

// Forks the snapshot and has it checkpointed; returns in the parent and, as
// the child, in the restored copy. Everything that can fail without a
// process to clean up is done before the fork; after it, the guard ends the
// snapshot on every way out but success.
inline asio::awaitable<fork_outcome> fork_snapshot(asio::any_io_executor ex, fork_plan plan) {
    snapshot_socket_pair pair;
    if (pair.parent_end < 0)
        co_return fork_failure(errc::internal_error, std::string("socketpair failed: ") + std::strerror(errno));
    auto request = fork_request_bytes(plan, inode_of(pair.snapshot_end), protocol::fork_request::snapshot);
    auto& context = asio::query(ex, asio::execution::context);
    context.notify_fork(asio::execution_context::fork_prepare);
    pid_t pid = ::fork();
    if (pid == 0) co_return run_as_snapshot(context, pair, plan.path);
    int fork_errno = errno;
    snapshot_guard snapshot(pid);  // first: nothing after the fork may leave the snapshot behind
    context.notify_fork(asio::execution_context::fork_parent);
    snapshot_socket_pair::close(pair.snapshot_end);
    if (pid < 0) co_return fork_failure(errc::internal_error, std::string("fork failed: ") + std::strerror(fork_errno));
    if (!snapshot_has_session(pair.parent_end))
        co_return fork_failure(errc::internal_error, "the snapshot ended before it could be checkpointed");
    if (snapshot.pidfd() < 0)
        co_return fork_failure(errc::internal_error,
                               std::string("pidfd_open failed: ") + std::strerror(snapshot.pidfd_errno()));
    auto connection = co_await connect_to_agent(plan.path);
    if (connection.error.ec) co_return fork_outcome::of(std::move(connection.error));
    plan.fds.push_back(snapshot.pidfd());
    auto outcome = co_await ask_agent(std::move(connection.socket), plan.path, std::move(request), std::move(plan.fds));
    if (!outcome.ec) snapshot.hand_over();
    co_return outcome;
}

}  // namespace rfork::detail
