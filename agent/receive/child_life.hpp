// A restored child's life, once it runs: its output and exit status go to
// its parent's agent, input and signals come from there.
#pragma once

#include "common/agent_state.hpp"
#include "peer/peer_connection.hpp"
#include "receive/restored_child.hpp"

#include <asio/awaitable.hpp>

#include <memory>

namespace rfork::agent {

// Input, signals and lazy pages from the parent's agent, until it goes away;
// then the child's input ends and no more pages come, however this ends.
asio::awaitable<void> take_requests(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer);

// Serves the child until it has ended and its parent's agent knows. If that
// agent goes away, the child runs on and its output goes to this agent's
// stdout, each line marked with its id. `agent` outlives every coroutine of
// the agent (main.cpp destroys the io_context first).
asio::awaitable<void> serve_child(agent_state& agent, std::shared_ptr<restored_child> child,
                                  std::shared_ptr<peer_connection> peer);

}  // namespace rfork::agent
