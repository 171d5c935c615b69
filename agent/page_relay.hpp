// Lazy pages: CRIU's page-server conversation carried on the agents' own
// connection (so it is as authenticated and encrypted as the image). The
// sender's `criu dump --lazy-pages` and the receiver's `criu lazy-pages` each
// talk on one end of a socket pair (--ps-socket); the agent holding the other
// end sends what its CRIU writes as page_data frames and hands the page_data
// frames of its peer to its CRIU.
#pragma once

#include "process.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>

#include <cstdint>
#include <functional>
#include <memory>

namespace rfork::agent {

// A pair of connected unix sockets: `criu` for --ps-socket, `agent` for the relay.
struct page_socket_pair {
    unique_fd criu, agent;
};
page_socket_pair make_page_sockets();

class page_relay {
public:
    // Sends one frame to the peer agent; false once that is impossible.
    using sender = std::function<asio::awaitable<bool>(const detail::bytes&)>;

    page_relay(const asio::any_io_executor& ex, unique_fd agent_end);

    // What the local CRIU writes, as page_data frames, until it closes its
    // end (then page_end), the peer is gone, or close().
    static asio::awaitable<void> pump_out(std::shared_ptr<page_relay> self, sender send);

    // A page_data or page_end frame from the peer, for the local CRIU.
    asio::awaitable<void> take(const detail::received_frame& frame);

    static bool carries(protocol::message_type t) {
        return t == protocol::message_type::page_data || t == protocol::message_type::page_end;
    }

    std::uint64_t bytes_in() const { return bytes_in_; }
    std::uint64_t bytes_out() const { return bytes_out_; }
    // Ends the conversation: the local CRIU reads end of stream.
    void close();

private:
    asio::local::stream_protocol::socket socket_;
    std::uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

}  // namespace rfork::agent
