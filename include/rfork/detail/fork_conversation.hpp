// What a fork says to the local agent, and what it makes of the answer: the
// part both ways of forking (fork_snapshot.hpp, fork_operation.hpp) share.
#pragma once

#include <rfork/detail/agent_connection.hpp>
#include <rfork/detail/frame_io.hpp>
#include <rfork/error.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rfork::detail {

struct fork_outcome {
    std::error_code ec;
    fork_result result;

    static fork_outcome failed(std::error_code ec, std::string_view text) {
        return {ec, fork_result::failure(user_message(text))};
    }
    static fork_outcome of(agent_error error) { return {error.ec, fork_result::failure(std::move(error.message))}; }
    template <typename Handler>
    void complete(Handler&& handler) && {
        std::forward<Handler>(handler)(ec, std::move(result));
    }
};

inline fork_outcome fork_failure(std::error_code ec, std::string_view text) { return fork_outcome::failed(ec, text); }

// What a fork asks, checked and worked out before anything is done.
struct fork_plan {
    std::string endpoint;  // "host:port", parsed
    std::string path;      // the local agent's socket
    std::uint32_t flags = 0;
    std::vector<int> fds;  // sent with the request
};

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

inline bytes fork_request_bytes(const fork_plan& plan, std::uint64_t socket_inode, std::uint32_t more_flags = 0) {
    protocol::fork_request fork{plan.endpoint, socket_inode, plan.flags | more_flags};
    return protocol::encode_with_handshake(protocol::role::program, fork);
}

// The agent's answer, one frame: the parent's side, the child's, or an error.
inline fork_outcome outcome_of(protocol::message_type type, std::span<const unsigned char> payload,
                               const std::string& path) {
    if (type == protocol::message_type::error) {
        return fork_outcome::of(error_from_agent(payload));
    }
    protocol::fork_reply r;
    if (type != protocol::message_type::fork_reply || protocol::decode(payload, r))
        return fork_failure(errc::unexpected_message, "unexpected answer from the agent at " + path);
    auto which = r.side == protocol::fork_side::child ? fork_result::side::child : fork_result::side::parent;
    return fork_outcome{{}, fork_result(which, child_info{r.child_id, r.host, static_cast<int>(r.pid)}, path)};
}

// What a failed read of the agent's answer means.
inline fork_outcome unanswered(std::error_code ec, const std::string& path) {
    if (ec == asio::error::eof || ec == asio::error::connection_reset)
        return fork_failure(errc::agent_lost, "the agent at " + path + " closed the connection without an answer");
    return fork_failure(ec, "bad answer from the agent at " + path + ": " + ec.message());
}

// Sends the request, with `fds` attached, and reads the answer.
inline asio::awaitable<fork_outcome> ask_agent(local_socket socket, std::string path, bytes request,
                                               std::vector<int> fds) {
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
        co_return unanswered(ec, path);
    }
    if (peer.who != protocol::role::agent)
        co_return fork_failure(errc::unexpected_role, "the peer at " + path + " is not an rfork agent");

    received_frame reply;
    if (auto ec = co_await read_frame(socket, reply, protocol::max_control_payload)) co_return unanswered(ec, path);
    socket.close();
    co_return outcome_of(reply.type, reply.payload, path);
}

}  // namespace rfork::detail
