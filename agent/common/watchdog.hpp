// A deadline on a connection: when it passes, the connection's pending
// operations are cancelled, so a peer that stalls cannot hold the agent's
// resources for longer than its limits allow.
#pragma once

#include <rfork/error.hpp>

#include <asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <system_error>

namespace rfork::agent {

template <typename Socket>
class watchdog {
public:
    watchdog(Socket& socket, std::chrono::steady_clock::duration limit)
        : state_(std::make_shared<state>(socket)), timer_(socket.get_executor()), limit_(limit) {
        arm();
    }
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        state_->socket = nullptr;
        timer_.cancel();
    }

    // Starts the full time again: progress was made.
    void arm() {
        timer_.expires_after(limit_);
        // A deadline already due runs its handler even after cancel(): it
        // acts only if it is still the current one and the watchdog lives.
        timer_.async_wait([s = state_, armed = ++state_->generation](std::error_code ec) {
            if (ec || armed != s->generation || !s->socket) return;
            s->fired = true;
            std::error_code ignored;
            s->socket->cancel(ignored);
        });
    }
    void stop() {
        ++state_->generation;
        timer_.cancel();
    }
    bool fired() const { return state_->fired; }
    // What an operation's result means: errc::timed_out once the deadline
    // has passed (the operation failed because it was cancelled), else `ec`.
    std::error_code timed_out_or(std::error_code ec) const { return fired() ? std::error_code(errc::timed_out) : ec; }

private:
    struct state {
        explicit state(Socket& s) : socket(&s) {}
        Socket* socket;
        unsigned generation = 0;
        bool fired = false;
    };
    std::shared_ptr<state> state_;
    asio::steady_timer timer_;
    std::chrono::steady_clock::duration limit_;
};

}  // namespace rfork::agent
