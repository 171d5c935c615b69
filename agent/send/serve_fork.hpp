// The sending role: a local program asks to be forked to another host. Its
// agent checkpoints it (the process at the other end of the socket, never a
// pid named in a message), sends the image, answers the program, and then
// relays between the parent and the child for the child's life.
#pragma once

#include "common/agent_state.hpp"
#include "common/process.hpp"
#include "local/local.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <sys/socket.h>

#include <vector>

namespace rfork::agent {

// Serves a fork request read from `program`: `cred` who connected, `caller`
// a pidfd of that process taken when it connected, `stdio` the fds that came
// with the request (stdout, stderr, stdin to forward, a snapshot's pidfd).
asio::awaitable<void> serve_fork(agent_state& agent, local_socket program, ucred cred, unique_fd caller,
                                 protocol::fork_request request, std::vector<unique_fd> stdio);

}  // namespace rfork::agent
