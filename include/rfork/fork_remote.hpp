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

#include <rfork/detail/fork_operation.hpp>
#include <rfork/fork_result.hpp>
#include <rfork/options.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <exception>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace rfork {

// A note for GCC 12 (Debian 12's compiler): it destroys twice any temporary of
// class type that lives in a full-expression containing co_await. The
// functions below take their strings as std::string_view and their options by
// reference, and are not coroutines themselves, so `co_await
// fork_remote(ctx, "b:7000")` is safe; pass fork_options as a named object.

// The general form, for any completion token; completes with
// (std::error_code, fork_result). On failure the result's error_message()
// says what happened and what to do.
template <typename CompletionToken = asio::use_awaitable_t<>>
auto async_fork_remote(asio::any_io_executor executor, std::string_view endpoint, const fork_options& options,
                       CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code, fork_result)>(
        [](auto handler, asio::any_io_executor ex, std::string ep, fork_options opts) {
            auto op = detail::fork_operation(ex, std::move(ep), std::move(opts));
            asio::co_spawn(ex, std::move(op),
                           [h = std::move(handler)](std::exception_ptr e, detail::fork_outcome o) mutable {
                               if (e) {  // only allocation failure can get here
                                   o.ec = errc::internal_error;
                                   o.result = fork_result::failure("rfork: unexpected exception in fork_remote");
                               }
                               std::move(h)(o.ec, std::move(o.result));
                           });
        },
        token, std::move(executor), std::string(endpoint), options);
}

namespace detail {

inline asio::awaitable<fork_result> fork_or_throw(asio::any_io_executor executor, std::string endpoint,
                                                  fork_options options) {
    auto op = fork_operation(std::move(executor), std::move(endpoint), std::move(options));
    auto o = co_await std::move(op);
    if (o.ec) throw std::system_error(o.ec, o.result.error_message());
    co_return std::move(o.result);
}

inline asio::awaitable<fork_result> fork_or_set(asio::any_io_executor executor, std::string endpoint,
                                                fork_options options, std::error_code& ec) {
    auto op = fork_operation(std::move(executor), std::move(endpoint), std::move(options));
    auto o = co_await std::move(op);
    ec = o.ec;
    co_return std::move(o.result);
}

}  // namespace detail

// Throws std::system_error (code in rfork::category(), what() the full
// explanation) on failure.
inline asio::awaitable<fork_result> fork_remote(asio::any_io_executor executor, std::string_view endpoint,
                                                const fork_options& options) {
    return detail::fork_or_throw(std::move(executor), std::string(endpoint), options);
}
inline asio::awaitable<fork_result> fork_remote(asio::any_io_executor executor, std::string_view endpoint) {
    return detail::fork_or_throw(std::move(executor), std::string(endpoint), fork_options{});
}
inline asio::awaitable<fork_result> fork_remote(asio::io_context& ctx, std::string_view endpoint,
                                                const fork_options& options) {
    return detail::fork_or_throw(ctx.get_executor(), std::string(endpoint), options);
}
inline asio::awaitable<fork_result> fork_remote(asio::io_context& ctx, std::string_view endpoint) {
    return detail::fork_or_throw(ctx.get_executor(), std::string(endpoint), fork_options{});
}

// Never throws for a failed fork: sets `ec` and returns a result whose
// error_message() explains it.
inline asio::awaitable<fork_result> fork_remote(asio::any_io_executor executor, std::string_view endpoint,
                                                std::error_code& ec, const fork_options& options) {
    return detail::fork_or_set(std::move(executor), std::string(endpoint), options, ec);
}
inline asio::awaitable<fork_result> fork_remote(asio::any_io_executor executor, std::string_view endpoint,
                                                std::error_code& ec) {
    return detail::fork_or_set(std::move(executor), std::string(endpoint), fork_options{}, ec);
}
inline asio::awaitable<fork_result> fork_remote(asio::io_context& ctx, std::string_view endpoint,
                                                std::error_code& ec, const fork_options& options) {
    return detail::fork_or_set(ctx.get_executor(), std::string(endpoint), options, ec);
}
inline asio::awaitable<fork_result> fork_remote(asio::io_context& ctx, std::string_view endpoint,
                                                std::error_code& ec) {
    return detail::fork_or_set(ctx.get_executor(), std::string(endpoint), fork_options{}, ec);
}

}  // namespace rfork
