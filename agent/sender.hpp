// The sending role: a local program asks to be forked to another host.
#pragma once

#include "agent.hpp"

#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>

namespace rfork::agent {

// Checkpoints the program at the other end of `program` (never a pid named in a
// message), sends the image to the requested agent, and answers the program.
asio::awaitable<void> serve_program(agent_state& agent, asio::local::stream_protocol::socket program);

}  // namespace rfork::agent
