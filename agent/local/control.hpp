// Waiting for, signalling and listing children: the local socket's requests
// other than a fork. Each takes the program's connection and answers on it.
#pragma once

#include "local/local.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <sys/socket.h>

namespace rfork::agent {

asio::awaitable<void> serve_wait(agent_state& agent, local_socket program, ucred cred,
                                 protocol::wait_request request);
asio::awaitable<void> serve_kill(agent_state& agent, local_socket program, ucred cred,
                                 protocol::kill_request request);
asio::awaitable<void> serve_list(agent_state& agent, local_socket program);

}  // namespace rfork::agent
