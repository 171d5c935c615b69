// A deadline on a connection: when it passes, the connection's pending
// operations are cancelled, so a peer that stalls cannot hold the agent's
// resources for longer than its limits allow.
#pragma once

#include <asio/steady_timer.hpp>

#include <chrono>
#include <system_error>

namespace rfork::agent {

template <typename Socket>
class watchdog {
public:
    watchdog(Socket& socket, std::chrono::steady_clock::duration limit)
        : socket_(socket), timer_(socket.get_executor()), limit_(limit) {
        arm();
    }
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() { timer_.cancel(); }

    // Starts the full time again: progress was made.
    void arm() {
        timer_.expires_after(limit_);
        timer_.async_wait([this](std::error_code ec) {
            if (ec) return;  // re-armed or stopped
            fired_ = true;
            std::error_code ignored;
            socket_.cancel(ignored);
        });
    }
    void stop() { timer_.cancel(); }
    bool fired() const { return fired_; }

private:
    Socket& socket_;
    asio::steady_timer timer_;
    std::chrono::steady_clock::duration limit_;
    bool fired_ = false;
};

}  // namespace rfork::agent
