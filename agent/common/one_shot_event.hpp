// Something that happens once, which any number of coroutines may wait for.
#pragma once

#include <rfork/detail/frame_io.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

namespace rfork::agent {

class one_shot_event {
public:
    explicit one_shot_event(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}

    void set() {
        happened_ = true;
        timer_.cancel();  // wakes every waiter
    }
    bool happened() const { return happened_; }

    asio::awaitable<void> wait() {
        while (!happened_) co_await timer_.async_wait(detail::as_tuple_awaitable);
    }

private:
    asio::steady_timer timer_;
    bool happened_ = false;
};

}  // namespace rfork::agent
