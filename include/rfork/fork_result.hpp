// What fork_remote returns: which side of the fork this is, and which child.
#pragma once

#include <rfork/detail/initiate.hpp>
#include <rfork/detail/local_request.hpp>

#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>

#include <csignal>
#include <string>
#include <system_error>
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
    // Throws std::system_error, whose what() is the full explanation.
    asio::awaitable<int> wait() const { return detail::status_or_throw(wait_operation()); }

    // The same for any completion token, run on `where` (an io_context or an
    // executor); completes with (std::error_code, int status).
    template <asio::completion_token_for<void(std::error_code, int)> CompletionToken>
    auto async_wait(detail::executor_arg where, CompletionToken&& token) const {
        return asio::async_initiate<CompletionToken, void(std::error_code, int)>(
            [](auto handler, asio::any_io_executor executor, asio::awaitable<detail::wait_outcome> op) {
                detail::spawn_operation(std::move(executor), std::move(op), std::move(handler), "wait");
            },
            token, std::move(where.executor), wait_operation());
    }

    // In the parent: sends `signal` to the child. Throws std::system_error
    // (no_such_child once the child has ended and was waited for).
    asio::awaitable<void> kill(int signal = SIGTERM) const { return detail::done_or_throw(kill_operation(signal)); }

    // The same for any completion token; completes with (std::error_code).
    template <asio::completion_token_for<void(std::error_code)> CompletionToken>
    auto async_kill(detail::executor_arg where, int signal, CompletionToken&& token) const {
        return asio::async_initiate<CompletionToken, void(std::error_code)>(
            [](auto handler, asio::any_io_executor executor, asio::awaitable<detail::kill_outcome> op) {
                detail::spawn_operation(std::move(executor), std::move(op), std::move(handler), "kill");
            },
            token, std::move(where.executor), kill_operation(signal));
    }

private:
    // Each copies what it needs: the coroutine never refers to this object.
    asio::awaitable<detail::wait_outcome> wait_operation() const {
        if (!is_parent()) return detail::refuse_as_child<detail::wait_outcome>();
        return detail::wait_for_child(agent_socket_, child_.id);
    }
    asio::awaitable<detail::kill_outcome> kill_operation(int signal) const {
        if (!is_parent()) return detail::refuse_as_child<detail::kill_outcome>();
        return detail::signal_child(agent_socket_, child_.id, signal);
    }

    side side_ = side::none;
    child_info child_;
    std::string agent_socket_;  // the parent's agent, who relays to the child
    std::string message_;
};

}  // namespace rfork
