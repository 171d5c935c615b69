// What fork_remote returns: which side of the fork this is, and which child.
#pragma once

#include <rfork/detail/local_request.hpp>

#include <asio/awaitable.hpp>

#include <csignal>
#include <string>
#include <utility>

namespace rfork {

// The child as its receiving agent names it. The same in parent and child.
struct child_info {
    std::string id;    // the receiving agent's id for this child
    std::string host;  // the receiving agent's host name
    int pid = 0;       // the child's pid; equal to the parent's, in its own pid namespace
};

class fork_result {
public:
    enum class side { none, parent, child };

    fork_result() = default;
    fork_result(side s, child_info child, std::string agent_socket = {})
        : side_(s), child_(std::move(child)), agent_socket_(std::move(agent_socket)) {}

    // Only for a failed fork: what the agents said, for the non-throwing forms.
    static fork_result failure(std::string message) {
        fork_result r;
        r.message_ = std::move(message);
        return r;
    }

    bool is_parent() const noexcept { return side_ == side::parent; }
    bool is_child() const noexcept { return side_ == side::child; }
    side which() const noexcept { return side_; }
    const child_info& child() const noexcept { return child_; }
    // Empty after success; after a failure, the full explanation.
    const std::string& error_message() const noexcept { return message_; }

    // In the parent: waits until the child has ended and returns its exit
    // code (0-255), or 128 + the number of the signal that ended it. Works for
    // a child that ended long ago, and for any number of children at once.
    // Throws std::system_error.
    asio::awaitable<int> wait() const {
        if (!is_parent()) return detail::refuse_as_child(errc::not_a_parent);
        return detail::wait_for_child(agent_socket_, child_.id);
    }

    // In the parent: sends `signal` to the child. Throws std::system_error
    // (no_such_child once the child has ended and was waited for).
    asio::awaitable<void> kill(int signal = SIGTERM) const {
        if (!is_parent()) return refuse_kill();
        return detail::signal_child(agent_socket_, child_.id, signal);
    }

private:
    static asio::awaitable<void> refuse_kill() {
        co_await detail::refuse_as_child(errc::not_a_parent);
    }

    side side_ = side::none;
    child_info child_;
    std::string agent_socket_;  // the parent's agent, who relays to the child
    std::string message_;
};

}  // namespace rfork
