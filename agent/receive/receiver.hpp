// The receiving role: another agent sends a checkpoint image to restore here.
#pragma once

#include "common/agent_state.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

namespace rfork::agent {

// Reads the handshake and the image from `peer`, restores the child in its own
// pid namespace, and answers `restored` or an error. The child outlives the
// connection; its output is logged on stdout, each line marked with its id.
// `agent` outlives every coroutine of the agent (main.cpp).
asio::awaitable<void> serve_peer(agent_state& agent, asio::ip::tcp::socket peer);

}  // namespace rfork::agent
