// Lazy pages: CRIU's page-server conversation carried on the agents' own
// connection (so it is as authenticated and encrypted as the image). The
// sender's `criu dump --lazy-pages` and the receiver's `criu lazy-pages` each
// talk on one end of a socket pair (--ps-socket); the agent holding the other
// end sends what its CRIU writes as page_data frames and hands the page_data
// frames of its peer to its CRIU.
#pragma once

#include "peer/peer_connection.hpp"
#include "common/process.hpp"
#include "common/run_as.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace rfork::agent {

// The fds CRIU gets for the page-server conversation and for saying "ready".
inline constexpr int criu_page_socket_fd = 3, criu_ready_fd = 4;

class page_relay {
public:
    // `max_in`: the most bytes the peer may send; beyond, the relay closes.
    page_relay(const asio::any_io_executor& ex, unique_fd agent_end,
               std::uint64_t max_in = std::numeric_limits<std::uint64_t>::max());

    // What the local CRIU writes, as page_data frames to `peer`, until it
    // closes its end (then page_end), the peer is gone, or close().
    static asio::awaitable<void> pump_out(std::shared_ptr<page_relay> self, std::shared_ptr<peer_connection> peer);

    // A page_data or page_end frame from the peer, for the local CRIU (`frame`
    // is the caller's, which awaits this at once). False
    // once, when the peer's bytes first go beyond `max_in` (closed then).
    asio::awaitable<bool> take(const detail::received_frame& frame);

    static bool carries(protocol::message_type t) {
        return t == protocol::message_type::page_data || t == protocol::message_type::page_end;
    }

    std::uint64_t bytes_in() const { return bytes_in_; }

    // Ends the conversation: the local CRIU reads end of stream.
    void close();

private:
    asio::local::stream_protocol::socket socket_;
    std::uint64_t bytes_in_ = 0, max_in_;
};

// Starts `command`, a CRIU command line that talks on criu_page_socket_fd
// and says ready on criu_ready_fd, with `fds` besides (its workspace's), as
// `as` when given and in the namespaces of `join` (see spawn), and waits
// until it is ready or has ended. `criu` is the
// process either way (the caller's, which awaits this at once); the result is the relay to it, or null if it ended first.
asio::awaitable<std::shared_ptr<page_relay>> start_page_criu(
    asio::any_io_executor ex, std::vector<std::string> command, std::vector<fd_mapping> fds,
    std::optional<run_as> as, child_process& criu, int join = -1,
    std::uint64_t max_in = std::numeric_limits<std::uint64_t>::max());

}  // namespace rfork::agent
