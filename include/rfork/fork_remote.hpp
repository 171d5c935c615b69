// fork_remote: fork the calling process onto the machine at "host:port".
//
//   rfork::fork_result r = co_await rfork::fork_remote(ctx, "b:7000");
//   if (r.is_child()) { /* running on b now */ }
//
// The local rfork agent checkpoints this process with CRIU while it keeps
// running and sends the image to the agent at the endpoint, which restores it.
// The same co_await then completes twice: here as the parent, once the child
// runs, and there as the child.
#pragma once

#include <rfork/detail/frame_io.hpp>
#include <rfork/detail/fork_operation.hpp>
#include <rfork/detail/initiate.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/options.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace rfork {

// A note for GCC 12 (Debian 12's compiler): it destroys twice a temporary
// aggregate, such as `fork_options{...}`, made in a full-expression that
// contains co_await. Pass fork_options as a named object; the defaults below
// are written `fork_options()`, which it gets right.

// The general form, for any completion token, run on `where` (an io_context
// or an executor); completes with (std::error_code, fork_result). On failure
// the result's error_message() says what happened and what to do.
template <asio::completion_token_for<void(std::error_code, fork_result)> CompletionToken = asio::use_awaitable_t<>>
auto async_fork_remote(detail::executor_arg where, std::string_view endpoint, fork_options options,
                       CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code, fork_result)>(
        [](auto handler, asio::any_io_executor executor, std::string endpoint_text, fork_options opts) {
            auto op = detail::fork_operation(executor, std::move(endpoint_text), std::move(opts));
            detail::spawn_operation(std::move(executor), std::move(op), std::move(handler), "fork_remote");
        },
        token, std::move(where.executor), std::string(endpoint), std::move(options));
}

namespace detail {

inline asio::awaitable<fork_result> fork_or_throw(asio::any_io_executor executor, std::string endpoint,
                                                  fork_options options) {
    auto [ec, result] = co_await async_fork_remote(std::move(executor), endpoint, std::move(options), as_tuple_awaitable);
    if (ec) throw std::system_error(ec, result.error_message());
    co_return std::move(result);
}

}  // namespace detail

// Throws std::system_error (code in rfork::category(), what() the full
// explanation) on failure.
inline asio::awaitable<fork_result> fork_remote(detail::executor_arg where, std::string_view endpoint,
                                                fork_options options = fork_options()) {
    return detail::fork_or_throw(std::move(where.executor), std::string(endpoint), std::move(options));
}

// Never throws for a failed fork: sets `ec` and returns a result whose
// error_message() explains it. `ec` must outlive the co_await, as with
// asio::redirect_error, which this is.
inline asio::awaitable<fork_result> fork_remote(detail::executor_arg where, std::string_view endpoint,
                                                std::error_code& ec, fork_options options = fork_options()) {
    return async_fork_remote(std::move(where), endpoint, std::move(options), asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace rfork
