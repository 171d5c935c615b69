// A mutex for coroutines on one io_context: frames written by several
// coroutines to one connection must not interleave.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/use_awaitable.hpp>

#include <system_error>

namespace rfork::agent {

class async_mutex {
public:
    explicit async_mutex(const asio::any_io_executor& ex) : slot_(ex, 1) {}

    // Waits while another holds it. A one-slot channel: whoever filled the slot holds the lock.
    asio::awaitable<void> lock() {
        std::error_code none;
        co_await slot_.async_send(none, true, asio::use_awaitable);
    }
    void unlock() {
        slot_.try_receive([](std::error_code, bool) {});
    }

private:
    asio::experimental::channel<void(std::error_code, bool)> slot_;
};

}  // namespace rfork::agent
