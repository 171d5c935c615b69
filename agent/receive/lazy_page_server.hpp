// The page server that `criu lazy-pages` talks to on the receiving side: it
// answers the daemon's requests from the pages the sender streams
// (send/page_stream.hpp), which arrive ahead of them, and asks the sender
// for the missing pages of a request first (page_want). Pages are held until
// the daemon has them, and never more than the bound the agent sets.
// Everything from the sender is checked: it is hostile until then.
#pragma once

#include "common/process.hpp"
#include "criu/page_server_iov.hpp"
#include "peer/peer_connection.hpp"
#include "receive/page_pool.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>

namespace rfork::agent {

class lazy_page_server {
public:
    // `daemon`: the agent's end of the daemon's conversation; `max_in`: the
    // most page bytes the sender may push in all; `max_held`: the most this
    // agent holds at once (the memory the sender announced: a child's pages
    // are each held once, until the daemon has them).
    lazy_page_server(const asio::any_io_executor& ex, unique_fd daemon, std::uint64_t max_in, std::uint64_t max_held);

    // Answers the daemon until it ends (its child has every page) or fails,
    // or close(); then tells the sender page_end: no more pages are needed.
    static asio::awaitable<void> serve(std::shared_ptr<lazy_page_server> self, std::shared_ptr<peer_connection> peer);

    // A page_push or page_end from the sender. False
    // once, when the pages kept first go beyond `max_in` or `max_held` (a
    // page sent again counts once): the daemon is cut off then, as it is by
    // a malformed push. Once the daemon is done, pushes are let go.
    bool take(const detail::received_frame& frame);
    static bool carries(protocol::message_type t) {
        return t == protocol::message_type::page_push || t == protocol::message_type::page_end;
    }

    std::uint64_t bytes_in() const { return bytes_in_; }
    std::size_t pages_held() const { return pages_.size(); }

    // Cuts the daemon off (it fails: the child could not be whole) and lets
    // go of every page held.
    void close();

private:
    struct page_key {
        std::uint64_t process, address;
        friend bool operator==(const page_key&, const page_key&) = default;
    };
    struct key_hash {
        std::size_t operator()(const page_key& k) const noexcept {
            return std::hash<std::uint64_t>()(k.address ^ (k.process * 0x9E3779B97F4A7C15ull));
        }
    };

    static asio::awaitable<void> read_requests(std::shared_ptr<lazy_page_server> self,
                                               std::shared_ptr<peer_connection> peer);
    static asio::awaitable<void> answer_requests(std::shared_ptr<lazy_page_server> self);
    bool whole(const page_server_iov& request) const;
    void release(const page_server_iov& request);
    void wake();

    asio::local::stream_protocol::socket daemon_;
    asio::steady_timer wake_;
    page_pool pool_;
    std::unordered_map<page_key, unsigned char*, key_hash> pages_;  // in pool_
    std::unordered_set<page_key, key_hash> seen_;  // every page that ever arrived, counted once
    std::deque<page_server_iov> asked_;  // the daemon's requests, answered in order
    bool sender_done_ = false, closed_ = false;
    std::uint64_t bytes_in_ = 0, max_in_, max_held_pages_;
};

}  // namespace rfork::agent
