// Sending a checkpoint to the child's host and hearing its answer: the
// image, the files the receiver asks for, and with lazy pages the pages,
// until it says the child runs (or why not).
#pragma once

#include "common/agent_state.hpp"
#include "peer/conversation.hpp"
#include "send/checkpoint.hpp"
#include "send/child_relay.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <memory>
#include <variant>

namespace rfork::agent {

// Sends `image` of `pid` on `relay->peer` (connected) for `request` and
// returns the child the peer restored, or why not. The peer gets as long as
// its own CRIU may take to answer.
asio::awaitable<std::variant<protocol::restored, failure>> transfer(agent_state& agent,
                                                                    std::shared_ptr<child_relay> relay,
                                                                    checkpoint_image image, int pid,
                                                                    protocol::fork_request request);

}  // namespace rfork::agent
