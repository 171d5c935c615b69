// How the library's operations start for any completion token: a coroutine
// of the library's own, co_spawned on the caller's executor, whose outcome
// completes the caller's handler.
#pragma once

#include <rfork/error.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/execution/executor.hpp>
#include <asio/io_context.hpp>
#include <asio/is_executor.hpp>

#include <exception>
#include <string>
#include <utility>

namespace rfork::detail {

// Where an operation runs: an io_context, or any executor (of one).
struct executor_arg {
    asio::any_io_executor executor;

    executor_arg(asio::io_context& context) : executor(context.get_executor()) {}
    template <typename Executor>
        requires(asio::execution::is_executor<Executor>::value || asio::is_executor<Executor>::value)
    executor_arg(const Executor& e) : executor(e) {}
};

inline std::string unexpected_exception(std::exception_ptr e, const char* operation) {
    std::string text = std::string("unexpected exception in ") + operation;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& thrown) {
        text += std::string(": ") + thrown.what();
    } catch (...) {
    }
    return text;
}

// Runs `op` on `executor` and completes `handler` with its outcome, on the
// handler's own executor if it has one. The operations report their own
// errors as codes; an exception that still escapes `op` (bad_alloc, or one
// the standard library or Asio throws) completes it as internal_error, with
// the exception's text. Outcome: default-constructible, with
// `static Outcome failed(std::error_code, std::string)` and
// `void complete(Handler&&) &&`.
template <typename Outcome, typename Handler>
void spawn_operation(asio::any_io_executor executor, asio::awaitable<Outcome> op, Handler handler,
                     const char* operation) {
    auto handler_executor = asio::get_associated_executor(handler, executor);
    asio::co_spawn(executor, std::move(op),
                   asio::bind_executor(handler_executor, [h = std::move(handler), operation](std::exception_ptr e,
                                                                                             Outcome outcome) mutable {
                       if (e) outcome = Outcome::failed(errc::internal_error, unexpected_exception(e, operation));
                       std::move(outcome).complete(std::move(h));
                   }));
}

}  // namespace rfork::detail
