// Something that happens once, which any number of coroutines may wait for.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/bind_cancellation_slot.hpp>
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
    // completion token, as Asio's own operations do; a waiter's cancellation
    // (e.g. the losing side of `||`) reaches the wait and completes it with
    // operation_aborted. The event outlives its waits (its owner holds it).
    template <typename Token>
    auto async_wait(Token&& token) {
        return asio::async_initiate<Token, void(std::error_code)>(
            [this](auto handler) {
                auto slot = asio::get_associated_cancellation_slot(handler);
                auto ex = asio::get_associated_executor(handler, timer_.get_executor());
                auto done = [this, handler = std::move(handler)](std::error_code ec) mutable {
                    // set() ends the timer's waits early: that is the event, not a failure.
                    std::move(handler)(happened_ ? std::error_code{} : ec);
                };
                timer_.async_wait(asio::bind_cancellation_slot(slot, asio::bind_executor(ex, std::move(done))));
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
