// The agent's two listening sockets: the local one, for this host's programs,
// and the network one, for other agents.
#pragma once

#include "common/options.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>

#include <memory>

namespace rfork::agent {

// Shared with the accept loops, which outlive no one's reference to them.
struct listeners {
    std::shared_ptr<asio::local::stream_protocol::acceptor> local;
    std::shared_ptr<asio::ip::tcp::acceptor> network;

    // No connection is taken after this; the accept loops end.
    void close();
};

// Binds and listens on both (--socket and --listen), or throws.
listeners open_listeners(asio::io_context& io, const options& opts);

}  // namespace rfork::agent
