// Taking connections on one listening socket, each served by a coroutine of
// its own, until the agent closes the socket.
#pragma once

#include "common/agent_state.hpp"
#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/awaitable.hpp>
#include <asio/error.hpp>
#include <asio/steady_timer.hpp>

#include <fmt/core.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

namespace rfork::agent {

// Out of descriptors or memory, accept fails at once for as long as the
// listening socket has a connection waiting: retried at once, it would spin.
inline bool lacks_resources(const std::error_code& ec) {
    // Asio reports errno in a category of its own, which compares equal to no std::errc.
    if (ec.category() != asio::system_category() && ec.category() != std::system_category()) return false;
    return ec.value() == EMFILE || ec.value() == ENFILE || ec.value() == ENOBUFS || ec.value() == ENOMEM;
}

inline constexpr auto accept_pause = std::chrono::milliseconds(100);

// `where` names the listener in the log. The loop ends when the acceptor is
// closed. An exception (memory, a bug) would leave the agent alive and deaf on
// `where`: `deaf` is called first, then the exception goes on to the log.
// `agent` outlives every coroutine: run_agent destroys the io_context first.
template <typename Acceptor, typename Serve>
asio::awaitable<void> accept_loop(agent_state& agent, std::shared_ptr<Acceptor> acceptor, Serve serve,
                                  std::string where, std::function<void()> deaf) {
    try {
        asio::steady_timer pause(acceptor->get_executor());
        std::uint64_t failures = 0;  // in a row: one episode, one line when it starts and one when it ends
        for (;;) {
            auto [ec, socket] = co_await acceptor->async_accept(rfork::detail::as_tuple_awaitable);
            if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
            if (ec) {
                bool wait = lacks_resources(ec);
                if (failures++ == 0) {
                    emit_event("accept_failed", {{"on", where}, {"text", ec.message()}});
                    log("cannot accept connections on {}: {}{}", where, ec.message(),
                        wait ? fmt::format("; trying again every {} ms", accept_pause.count()) : std::string{});
                }
                if (wait) {
                    pause.expires_after(accept_pause);
                    co_await pause.async_wait(rfork::detail::as_tuple_awaitable);
                }
                continue;
            }
            if (failures > 0) {
                log("accepting connections on {} again, after {} failed attempts", where, failures);
                failures = 0;
            }
            spawn(agent.io.get_executor(), serve(agent, std::move(socket)), "a connection on " + where);
        }
    } catch (...) {
        deaf();
        throw;
    }
}

}  // namespace rfork::agent
