// Something that happens once, which any number of coroutines may wait for.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <system_error>
#include <utility>

namespace rfork::agent {

class one_shot_event {
public:
    explicit one_shot_event(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}

    // Wakes every waiter; a later wait completes at once. (A timer that never
    // expires until then: moving its expiry to the past cancels the waits.)
    void set() {
        happened_ = true;
        timer_.expires_at(asio::steady_timer::time_point::min());
    }
    bool happened() const { return happened_; }

    // Completes with no error once the event has happened, with any
    // completion token, as Asio's own operations do.
    template <typename Token>
    auto async_wait(Token&& token) {
        return asio::async_initiate<Token, void(std::error_code)>(
            [this](auto handler) {
                auto ex = asio::get_associated_executor(handler, timer_.get_executor());
                timer_.async_wait(asio::bind_executor(ex, [handler = std::move(handler)](std::error_code) mutable {
                    std::move(handler)(std::error_code{});  // the wait ends only by set(): no failure to tell
                }));
            },
            token);
    }

    asio::awaitable<void> wait() {
        if (!happened_) co_await async_wait(asio::use_awaitable);
    }

private:
    asio::steady_timer timer_;
    bool happened_ = false;
};

}  // namespace rfork::agent
