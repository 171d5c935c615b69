// The one conversation with the local agent that a fork is.
//
// The program sends its request and then only reads. The agent checkpoints it
// while it waits, so the checkpoint holds a process blocked in that read, with
// nothing of the reply consumed. The parent's read is answered by the local
// agent; the restored child's socket is replaced (CRIU --inherit-fd) by one
// on which the receiving agent has already written the child's answer.
#pragma once

#include <rfork/detail/frame_io.hpp>
#include <rfork/endpoint.hpp>
#include <rfork/error.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/options.hpp>
#include <rfork/protocol.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>

#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <span>
#include <vector>

#include <string>
#include <system_error>
#include <utility>

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
    char control[CMSG_SPACE(sizeof(int) * 3)] = {};
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

inline asio::awaitable<fork_outcome> fork_operation(asio::any_io_executor ex, std::string endpoint_text,
                                                    fork_options options) {
    if (!endpoint::parse(endpoint_text))
        co_return fork_failure(errc::bad_endpoint, "bad endpoint '" + endpoint_text +
                                                       "': expected host:port, e.g. node2:7000");
    std::string path = options.agent_socket.empty() ? agent_socket_from_environment() : options.agent_socket;

    asio::local::stream_protocol::socket socket(ex);
    asio::local::stream_protocol::endpoint agent_endpoint(path);
    auto [connect_ec] = co_await socket.async_connect(agent_endpoint, as_tuple_awaitable);
    if (connect_ec)
        co_return fork_failure(errc::agent_not_found,
                               "no rfork agent at " + path + " (" + connect_ec.message() +
                                   "); start rfork-agent on this machine, or set RFORK_AGENT_SOCKET");

    struct stat st {};
    if (::fstat(socket.native_handle(), &st) != 0)
        co_return fork_failure(errc::internal_error, "fstat of the agent socket failed");

    auto hello = protocol::encode_handshake(protocol::role::program);
    bytes request(hello.begin(), hello.end());
    protocol::fork_request fork{endpoint_text, st.st_ino,
                                options.forward_stdin ? protocol::fork_request::forward_stdin : 0u};
    auto frame = protocol::encode(fork);
    request.insert(request.end(), frame.begin(), frame.end());
    // The child's output goes where ours goes: the agent gets our stdout and stderr (and stdin, to forward it).
    std::vector<int> stdio = options.forward_stdin ? std::vector<int>{1, 2, 0} : std::vector<int>{1, 2};
    // If the agent refuses us before reading it all, its answer still explains why.
    std::string send_failure;
    auto sent = send_with_fds(socket.native_handle(), request, stdio);
    if (sent < 0) {
        send_failure = std::strerror(errno);
    } else {
        auto rest = std::span<const unsigned char>(request).subspan(static_cast<std::size_t>(sent));
        if (auto ec = co_await write_bytes(socket, rest)) send_failure = ec.message();
    }

    // From here on this process may be checkpointed at any instant.
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

    if (reply.type == protocol::message_type::error) {
        protocol::error_message e;
        if (auto ec = protocol::decode(reply.payload, e)) co_return fork_failure(ec, "malformed error from the agent");
        co_return fork_outcome{e.code, fork_result::failure(e.text)};
    }
    protocol::fork_reply r;
    if (reply.type != protocol::message_type::fork_reply || protocol::decode(reply.payload, r))
        co_return fork_failure(errc::unexpected_message, "unexpected answer from the agent at " + path);
    auto which = r.side == protocol::fork_side::child ? fork_result::side::child : fork_result::side::parent;
    co_return fork_outcome{{}, fork_result(which, child_info{r.child_id, r.host, static_cast<int>(r.pid)}, path)};
}

}  // namespace rfork::detail
