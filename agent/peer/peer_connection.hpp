// A connection between two agents: TLS 1.3, authenticated by the agents'
// shared secret (--secret-file), their certificates, or, for an agent without
// credentials, the secret of its own host (loopback only). Both sides speak
// the same frames over it.
#pragma once

#include "common/async_mutex.hpp"
// Not needed here: for the files that still look for the TLS functions in
// this header (main.cpp, receive/); they should include these themselves.
#include "peer/certificates.hpp"
#include "peer/tls.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace rfork::agent {

class peer_connection {
public:
    using executor_type = asio::any_io_executor;

    explicit peer_connection(const executor_type& ex) : tcp_(ex), lock_(ex) {}

    asio::ip::tcp::socket& tcp() { return tls_ ? tls_->next_layer() : tcp_; }
    executor_type get_executor() { return tcp().get_executor(); }
    bool secure() const { return tls_.has_value(); }
    SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }

    // Moves the connected socket under TLS; handshake() then authenticates.
    void use_tls(asio::ssl::context& context) { tls_.emplace(std::move(tcp_), context); }
    template <typename Token>
    auto async_handshake(asio::ssl::stream_base::handshake_type side, Token&& token) {
        return tls_->async_handshake(side, std::forward<Token>(token));
    }

    template <typename Buffers, typename Token>
    auto async_read_some(const Buffers& buffers, Token&& token) {
        if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
        return tcp_.async_read_some(buffers, std::forward<Token>(token));
    }
    template <typename Buffers, typename Token>
    auto async_write_some(const Buffers& buffers, Token&& token) {
        if (tls_) return tls_->async_write_some(buffers, std::forward<Token>(token));
        return tcp_.async_write_some(buffers, std::forward<Token>(token));
    }

    // Writes whole frames, one at a time: several coroutines send on one
    // connection (a child's output, its pages, its exit). False once a write
    // has failed: the connection is of no use after that.
    asio::awaitable<bool> send(std::span<const unsigned char> frames) {
        if (broken_) co_return false;
        co_await lock_.lock();
        auto ec = co_await detail::write_bytes(*this, frames);
        lock_.unlock();
        if (ec) broken_ = true;
        co_return !ec;
    }

    // For every connection between agents, either side: frames go out at
    // once (no Nagle delay), and a dead peer is noticed within about `idle`.
    void prepare_tcp(std::chrono::seconds idle);

    // A peer that vanishes (its host down, the network cut) is noticed within
    // about `limit`: unacknowledged data aborts the connection then
    // (TCP_USER_TIMEOUT), and an idle one is probed (keepalive).
    void detect_dead_peer(std::chrono::seconds limit);

    void cancel(std::error_code& ec) { tcp().cancel(ec); }
    void shutdown_send() {
        std::error_code ignored;
        tcp().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    }
    void close() {
        std::error_code ignored;
        tcp().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        tcp().close(ignored);
    }

private:
    asio::ip::tcp::socket tcp_;
    std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
    async_mutex lock_;
    bool broken_ = false;
};

}  // namespace rfork::agent
