// Options of fork_remote.
#pragma once

#include <cstdlib>
#include <string>

namespace rfork {

inline constexpr const char* default_agent_socket = "/run/rfork/agent.sock";

// The local agent's socket: $RFORK_AGENT_SOCKET, or /run/rfork/agent.sock.
inline std::string agent_socket_from_environment() {
    const char* env = std::getenv("RFORK_AGENT_SOCKET");
    return env && *env ? env : default_agent_socket;
}

// What is checkpointed for the child.
enum class capture {
    // A copy-on-write fork() of this process, made here, when this process
    // has one thread and no TCP connection: this process then runs on after
    // an instant, as after a local fork(). Otherwise, as `caller`.
    automatic,
    // This process itself, which stays frozen while CRIU dumps it.
    caller,
};

struct fork_options {
    // Where the local agent listens; empty means agent_socket_from_environment().
    std::string agent_socket;
    // The child reads this process's stdin (what the parent does not read
    // first); without it the child's stdin reads end of file.
    bool forward_stdin = false;
    capture how = capture::automatic;
};

}  // namespace rfork
