#include "peer/peer_connect.hpp"

#include "common/watchdog.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/this_coro.hpp>

#include <fmt/core.h>

namespace rfork::agent {

namespace {

using asio::ip::tcp;
using detail::as_tuple_awaitable;

// `socket` is the caller's connection, which awaits this at once.
asio::awaitable<std::error_code> connect_with_timeout(tcp::socket& socket, endpoint where,
                                                      std::chrono::seconds limit) {
    auto ex = co_await asio::this_coro::executor;
    tcp::resolver resolver(ex);
    auto port = std::to_string(where.port);
    auto [resolve_ec, results] = co_await resolver.async_resolve(where.host, port, as_tuple_awaitable);
    if (resolve_ec) co_return resolve_ec;
    watchdog guard(socket, limit);
    auto [cec, connected] = co_await asio::async_connect(socket, results, as_tuple_awaitable);
    guard.stop();
    co_return guard.fired() ? std::error_code(asio::error::timed_out) : cec;
}

}  // namespace

asio::awaitable<std::optional<connect_failure>> connect_to_agent(std::shared_ptr<peer_connection> connection,
                                                                 endpoint where, asio::ssl::context* tls,
                                                                 connect_limits limits) {
    using step = connect_failure::step;
    auto& peer = *connection;
    if (auto ec = co_await connect_with_timeout(peer.tcp(), where, limits.connect))
        co_return connect_failure{step::reach, ec, ec.message()};
    peer.prepare_tcp(limits.idle);
    // One bound for both handshakes: a peer that accepts and then says nothing
    // must not hold the caller.
    watchdog guard(peer, limits.handshake);
    auto timed_out_or = [&guard](step at, std::error_code ec) {
        if (guard.fired()) return connect_failure{at, asio::error::timed_out, "timed out"};
        return connect_failure{at, ec, ec.message()};
    };
    if (tls) {
        peer.use_tls(*tls);
        if (!prepare_client_handshake(peer.ssl(), where.host))
            co_return connect_failure{step::tls, errc::internal_error,
                                      fmt::format("OpenSSL cannot check a certificate against {}", where.host)};
        auto [ec] = co_await peer.async_handshake(asio::ssl::stream_base::client, as_tuple_awaitable);
        if (auto names = ec ? names_of_wrong_host(peer.ssl()) : std::nullopt)
            co_return connect_failure{step::wrong_host, errc::not_permitted,
                                      fmt::format("showed a certificate for {}, not {}", *names, where.host)};
        if (ec) co_return timed_out_or(step::tls, ec);
        // Nothing of ours goes to a peer that did not prove its credentials
        // (only a secret's can pass the handshake unproved: see tls.hpp).
        if (!authenticated_as_required(peer.ssl()))
            co_return connect_failure{step::tls, errc::not_permitted,
                                      "it did not prove it holds the secret (it answered without the PSK)"};
    }
    auto hello = protocol::encode_handshake(protocol::role::sender);
    if (auto ec = co_await detail::write_bytes(peer, hello)) co_return timed_out_or(step::lost, ec);
    protocol::handshake answer;
    auto ec = co_await detail::read_handshake(peer, answer);
    if (ec == errc::unsupported_version)
        co_return connect_failure{step::handshake, ec, fmt::format("it speaks protocol version {}, this agent {}",
                                                                   answer.version, protocol::protocol_version)};
    if (ec) co_return timed_out_or(step::handshake, ec);
    if (answer.who != protocol::role::agent)
        co_return connect_failure{step::handshake, errc::unexpected_role,
                                  "it answered as something other than an agent"};
    co_return std::nullopt;
}

}  // namespace rfork::agent
