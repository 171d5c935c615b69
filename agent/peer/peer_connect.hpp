// How one agent reaches another as a sending agent does: TCP within a bound,
// TLS with the agents' credentials, then rfork's handshake both ways. The
// sender and `rfork-agent doctor --peer` connect through it alike.
#pragma once

#include "peer/peer_connection.hpp"

#include <rfork/endpoint.hpp>

#include <asio/awaitable.hpp>
#include <asio/ssl/context.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace rfork::agent {

struct connect_failure {
    enum class step {
        reach,      // no TCP connection (resolving, refused, timed out)
        tls,        // the TLS handshake failed, or the peer did not prove its credentials: other ones
        wrong_host, // its certificate, signed by our authority, names another host than the one dialed
        lost,       // the connection dropped before our rfork handshake went out
        handshake,  // the peer's rfork handshake was missing or refused ours
    };
    step at;
    std::error_code code;
    std::string why;  // what happened at that step, e.g. "Connection refused" or "timed out"
};

struct connect_limits {
    std::chrono::seconds connect;    // for the TCP connection
    std::chrono::seconds handshake;  // for the TLS and rfork handshakes together
    std::chrono::seconds idle;       // a dead peer is noticed within about this (keepalive)
};

// Connects `peer` to the agent at `where`, with TLS when `tls` is given;
// returns why not, or nothing once both handshakes are done. `tls` is the
// agent's context, which lives as long as the agent.
asio::awaitable<std::optional<connect_failure>> connect_to_agent(std::shared_ptr<peer_connection> peer,
                                                                 endpoint where, asio::ssl::context* tls,
                                                                 connect_limits limits);

}  // namespace rfork::agent
