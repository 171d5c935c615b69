// The one conversation with the local agent that a fork is.
//
// What is checkpointed waits for its answer in a read, so the checkpoint holds
// a process blocked there with nothing of the answer consumed; the restored
// child's socket is replaced (CRIU --inherit-fd) by one on which the receiving
// agent has already written the child's answer.
//
// Two ways to get there. When the caller has one thread and no TCP
// connection, it fork()s a copy-on-write snapshot of itself that waits on one
// end of a socket pair, and asks the agent to checkpoint that snapshot: the
// caller is held up only for its local fork(), and runs on while CRIU works.
// The agent dumps a snapshot only when it is a child of the process asking,
// and CRIU ends it once dumped (with lazy pages: once all of its memory has
// gone to the child's host). Otherwise the caller asks and is itself
// checkpointed while it waits, frozen for the whole dump.
#pragma once

#include <rfork/detail/frame_io.hpp>
#include <rfork/detail/process_info.hpp>
#include <rfork/endpoint.hpp>
#include <rfork/error.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/options.hpp>
#include <rfork/protocol.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/execution/context.hpp>
#include <asio/execution_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/query.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace rfork::detail {

struct fork_outcome {
    std::error_code ec;
    fork_result result;
};

inline fork_outcome fork_failure(std::error_code ec, std::string message) {
    return {ec, fork_result::failure("rfork: " + std::move(message))};
}

// Sends the first bytes of `data` with `fds` attached (SCM_RIGHTS); returns
// how many bytes went, or -1 with errno set.
inline ssize_t send_with_fds(int socket, std::span<const unsigned char> data, const std::vector<int>& fds) {
    if (fds.size() > protocol::fork_request::max_fds) {
        errno = EINVAL;
        return -1;
    }
    char control[CMSG_SPACE(sizeof(int) * protocol::fork_request::max_fds)] = {};
    iovec iov{const_cast<unsigned char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    ssize_t n;
    do {
        n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

inline std::uint64_t inode_of(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

inline bytes fork_request_bytes(const std::string& endpoint_text, std::uint64_t socket_inode, std::uint32_t flags) {
    protocol::fork_request fork{endpoint_text, socket_inode, flags};
    return protocol::encode_with_handshake(protocol::role::program, fork);
}

// The agent's answer, one frame: the parent's side, the child's, or an error.
inline fork_outcome outcome_of(protocol::message_type type, std::span<const unsigned char> payload,
                               const std::string& path) {
    if (type == protocol::message_type::error) {
        protocol::error_message e;
        if (auto ec = protocol::decode(payload, e)) return fork_failure(ec, "malformed error from the agent");
        return fork_outcome{e.code, fork_result::failure(e.text)};
    }
    protocol::fork_reply r;
    if (type != protocol::message_type::fork_reply || protocol::decode(payload, r))
        return fork_failure(errc::unexpected_message, "unexpected answer from the agent at " + path);
    auto which = r.side == protocol::fork_side::child ? fork_result::side::child : fork_result::side::parent;
    return fork_outcome{{}, fork_result(which, child_info{r.child_id, r.host, static_cast<int>(r.pid)}, path)};
}

// Sends the request, with `fds` attached, and reads the answer.
inline asio::awaitable<fork_outcome> ask_agent(asio::local::stream_protocol::socket& socket, const std::string& path,
                                               const bytes& request, const std::vector<int>& fds) {
    // If the agent refuses us before reading it all, its answer still explains why.
    std::string send_failure;
    auto sent = send_with_fds(socket.native_handle(), request, fds);
    if (sent < 0 && errno != EPIPE && errno != ECONNRESET)  // nothing went: no answer will come
        co_return fork_failure(errc::agent_lost,
                               "could not send the request to the agent at " + path + " (" + std::strerror(errno) + ")");
    if (sent < 0) {
        send_failure = std::strerror(errno);
    } else {
        auto rest = std::span<const unsigned char>(request).subspan(static_cast<std::size_t>(sent));
        if (auto ec = co_await write_bytes(socket, rest)) send_failure = ec.message();
    }

    protocol::handshake peer;
    if (auto ec = co_await read_handshake(socket, peer)) {
        if (!send_failure.empty())
            co_return fork_failure(errc::agent_lost,
                                   "could not send the request to the agent at " + path + " (" + send_failure + ")");
        if (ec == asio::error::eof || ec == asio::error::connection_reset)
            co_return fork_failure(errc::agent_lost, "the agent at " + path + " closed the connection without an answer");
        co_return fork_failure(ec, "bad answer from the agent at " + path + ": " + ec.message());
    }
    if (peer.who != protocol::role::agent)
        co_return fork_failure(errc::unexpected_role, "the peer at " + path + " is not an rfork agent");

    received_frame reply;
    if (auto ec = co_await read_frame(socket, reply)) {
        if (ec == asio::error::eof)
            co_return fork_failure(errc::agent_lost, "the agent at " + path + " closed the connection without an answer");
        co_return fork_failure(ec, "bad answer from the agent at " + path + ": " + ec.message());
    }
    socket.close();
    co_return outcome_of(reply.type, reply.payload, path);
}

// In the snapshot: blocks in read() until CRIU has dumped it (and killed it),
// or, in the restored child, reads the child's answer. No event loop runs in
// the snapshot, so none of the parent's pending work happens twice.
inline fork_outcome wait_as_snapshot(int fd, const std::string& path) {
    protocol::stream_decoder decoder(true, 64 * 1024);
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

inline bool can_snapshot(const fork_options& options) {
    return options.how == capture::automatic && status_field(0, "Threads") == 1 && !has_tcp_connections(0);
}

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

// Forks the snapshot and has it checkpointed; returns in the parent and, as
// the child, in the restored copy.
inline asio::awaitable<fork_outcome> fork_snapshot(asio::any_io_executor ex, const std::string& endpoint_text,
                                                   const std::string& path, std::uint32_t flags,
                                                   std::vector<int> fds) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        co_return fork_failure(errc::internal_error, std::string("socketpair failed: ") + std::strerror(errno));
    auto snapshot_inode = inode_of(pair[1]);
    auto& context = asio::query(ex, asio::execution::context);
    context.notify_fork(asio::execution_context::fork_prepare);
    pid_t snapshot = ::fork();
    if (snapshot == 0) {
        // An event loop of its own (the parent's epoll is not this process's
        // to dump), and a session of its own (CRIU needs the leader of the
        // session inside the dump or in the same pid namespace).
        // A snapshot that cannot become one ends at once: the parent, waiting
        // for its byte below, then reads the end of the socket instead.
        try {
            context.notify_fork(asio::execution_context::fork_child);
        } catch (...) {
            ::_exit(127);
        }
        ::setsid();
        ::close(pair[0]);
        // The session exists before the agent looks at it: the parent waits for this.
        const char made = 's';
        if (::write(pair[1], &made, 1) != 1) ::_exit(127);
        auto outcome = wait_as_snapshot(pair[1], path);
        ::close(pair[1]);
        // Only the restored child gets past here; the snapshot never runs on.
        if (!outcome.result.is_child()) ::_exit(0);
        co_return outcome;
    }
    int fork_errno = errno;
    context.notify_fork(asio::execution_context::fork_parent);
    ::close(pair[1]);
    if (snapshot < 0) {
        ::close(pair[0]);
        co_return fork_failure(errc::internal_error, std::string("fork failed: ") + std::strerror(fork_errno));
    }
    // Until the snapshot has its own session (setsid, its first step), the
    // agent would find it in ours, which CRIU may be unable to checkpoint.
    char made = 0;
    ssize_t got = 0;
    while ((got = ::read(pair[0], &made, 1)) < 0 && errno == EINTR) {
    }
    if (got != 1) {
        ::close(pair[0]);
        ::kill(snapshot, SIGKILL);
        ::waitpid(snapshot, nullptr, 0);
        co_return fork_failure(errc::internal_error, "the snapshot ended before it could be checkpointed");
    }
    // Names the snapshot to the agent, with no pid to reuse; gone before the next snapshot.
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, snapshot, 0));
    if (pidfd < 0) {
        auto failed = fork_failure(errc::internal_error, std::string("pidfd_open failed: ") + std::strerror(errno));
        ::close(pair[0]);
        ::kill(snapshot, SIGKILL);
        ::waitpid(snapshot, nullptr, 0);
        co_return failed;
    }

    fork_outcome outcome;
    asio::local::stream_protocol::socket socket(ex);
    asio::local::stream_protocol::endpoint agent_endpoint(path);
    auto [connect_ec] = co_await socket.async_connect(agent_endpoint, as_tuple_awaitable);
    if (connect_ec) {
        outcome = fork_failure(errc::agent_not_found,
                               "no rfork agent at " + path + " (" + connect_ec.message() +
                                   "); start rfork-agent on this machine, or set RFORK_AGENT_SOCKET");
    } else {
        fds.push_back(pidfd);
        auto request = fork_request_bytes(endpoint_text, snapshot_inode, flags | protocol::fork_request::snapshot);
        outcome = co_await ask_agent(socket, path, request, fds);
    }
    ::close(pidfd);
    ::close(pair[0]);
    // Once its child runs, the snapshot is CRIU's to end; otherwise it is ours.
    if (outcome.ec) {
        ::kill(snapshot, SIGKILL);
        ::waitpid(snapshot, nullptr, 0);
    } else {
        unreaped_snapshots::all().add(snapshot);
        unreaped_snapshots::all().reap();
    }
    co_return outcome;
}

inline asio::awaitable<fork_outcome> fork_operation(asio::any_io_executor ex, std::string endpoint_text,
                                                    fork_options options) {
    if (!endpoint::parse(endpoint_text))
        co_return fork_failure(errc::bad_endpoint, "bad endpoint '" + endpoint_text +
                                                       "': expected host:port, e.g. node2:7000");
    std::string path = options.agent_socket.empty() ? agent_socket_from_environment() : options.agent_socket;
    std::uint32_t flags = options.forward_stdin ? protocol::fork_request::forward_stdin : 0u;
    // The child's output goes where ours goes: the agent gets our stdout and stderr (and stdin, to forward it).
    std::vector<int> fds = options.forward_stdin ? std::vector<int>{1, 2, 0} : std::vector<int>{1, 2};

    unreaped_snapshots::all().reap();
    if (can_snapshot(options)) {
        auto snapshot = fork_snapshot(ex, endpoint_text, path, flags, std::move(fds));
        co_return co_await std::move(snapshot);
    }

    asio::local::stream_protocol::socket socket(ex);
    asio::local::stream_protocol::endpoint agent_endpoint(path);
    auto [connect_ec] = co_await socket.async_connect(agent_endpoint, as_tuple_awaitable);
    if (connect_ec)
        co_return fork_failure(errc::agent_not_found,
                               "no rfork agent at " + path + " (" + connect_ec.message() +
                                   "); start rfork-agent on this machine, or set RFORK_AGENT_SOCKET");
    // From the request on, this process may be checkpointed at any instant.
    auto request = fork_request_bytes(endpoint_text, inode_of(socket.native_handle()), flags);
    co_return co_await ask_agent(socket, path, request, fds);
}

}  // namespace rfork::detail
