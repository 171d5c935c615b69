// The local socket: programs of this host ask to be forked, and parents (or
// the rfork-agent command line) ask to wait for, signal or list children.
#pragma once

#include "common/agent_state.hpp"
#include "peer/conversation.hpp"
#include "common/process.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>

#include <sys/socket.h>

#include <vector>

namespace rfork::agent {

using local_socket = asio::local::stream_protocol::socket;

// Serves one connection on the local socket: one request, one answer.
asio::awaitable<void> serve_local(agent_state& agent, local_socket program);

// The requests, once read (sender.cpp and control.cpp). `caller` is a pidfd
// of the process that connected, taken when it connected.
asio::awaitable<void> serve_fork(agent_state& agent, local_socket& program, const ucred& cred, unique_fd caller,
                                 const protocol::fork_request& request, std::vector<unique_fd>& stdio);
asio::awaitable<void> serve_wait(agent_state& agent, local_socket& program, const ucred& cred,
                                 const protocol::wait_request& request);
asio::awaitable<void> serve_kill(agent_state& agent, local_socket& program, const ucred& cred,
                                 const protocol::kill_request& request);
asio::awaitable<void> serve_list(agent_state& agent, local_socket& program);

// Writes the agent's handshake and one message to the program.
template <typename Message>
asio::awaitable<void> answer(local_socket& program, const Message& message) {
    auto bytes = handshake_and(message);
    co_await detail::write_bytes(program, bytes);
}

asio::awaitable<void> answer_failure(local_socket& program, const failure& f);

}  // namespace rfork::agent
