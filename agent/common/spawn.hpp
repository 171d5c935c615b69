// Starting a coroutine that nobody awaits. An exception that escapes it is
// logged with what it was doing, never dropped: a coroutine that can fail
// must also release whoever waits for it (its own cleanup does that).
#pragma once

#include "common/log.hpp"

#include <asio/co_spawn.hpp>

#include <exception>
#include <string>
#include <utility>

namespace rfork::agent {

template <typename Executor, typename Awaitable>
void spawn(const Executor& ex, Awaitable task, std::string what) {
    asio::co_spawn(ex, std::move(task), [what = std::move(what)](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            log("{} failed: {}", what, x.what());
        } catch (...) {
            log("{} failed", what);
        }
    });
}

}  // namespace rfork::agent
