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


namespace rfork::agent {

using local_socket = asio::local::stream_protocol::socket;

// Serves one connection on the local socket: one request, one answer. Here
// and in every coroutine serving a request, `agent` is a reference: the
// agent's state lives in run_agent for as long as the agent runs, beyond any
// coroutine it starts.
asio::awaitable<void> serve_local(agent_state& agent, local_socket program);

// Writes the agent's handshake and one message to the program. `program`
// and `message` are the caller's, which awaits this at once: they outlive
// the write. (Named, never a temporary in the co_await: GCC 12 destroys such
// a temporary wrongly.)
template <typename Message>
asio::awaitable<void> answer(local_socket& program, const Message& message) {
    auto bytes = handshake_and(message);
    co_await detail::write_bytes(program, bytes);
}

// The failure as an error frame (`program` as for answer); its text bare, as on every error frame (the
// library says "rfork: " when it shows it).
asio::awaitable<void> answer_failure(local_socket& program, const failure& f);

}  // namespace rfork::agent
