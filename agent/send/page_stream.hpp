// The memory of a lazily dumped process, sent to its child's host: the
// pages the receiver wants (page_want: its lazy-pages daemon asks for them,
// for the restore, a fault of the child, or in the background), asked of the
// dump's CRIU (its page server, a few requests in flight) and sent on as
// page_push frames; and, after go_ahead(), every other lazy page behind
// them as fast as the connection takes them. The receiver answers its
// daemon from what has arrived (receive/lazy_page_server.hpp).
#pragma once

#include "common/process.hpp"
#include "criu/page_server_iov.hpp"
#include "peer/peer_connection.hpp"
#include "send/lazy_ranges.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

namespace rfork::agent {

class page_stream {
public:
    // `criu`: the agent's end of the dump's page-server conversation;
    // `ranges`: its lazy pages (lazy_ranges_in), sorted.
    page_stream(const asio::any_io_executor& ex, unique_fd criu, std::vector<lazy_range> ranges);

    // Sends wanted pages, and every page once go_ahead() is called, until the
    // receiver says its child has them all (page_end), the connection fails,
    // or close(). If the dump's CRIU fails first, or the receiver wants pages
    // the dump does not have, the receiver hears page_end: no more come.
    static asio::awaitable<void> run(std::shared_ptr<page_stream> self, std::shared_ptr<peer_connection> peer);

    // Until this is called, only wanted pages go; then all of them. The
    // agent does not call it today: measured on 2 cores (issue 12), pages
    // streamed ahead delayed the child (its faults waited behind them) and
    // did not bring the memory sooner, CRIU's lazy-pages daemon being the
    // bottleneck. It is there for a handler of the child's faults of the
    // agent's own, which would place pages as they arrive.
    void go_ahead();

    // A page_want or page_end from the receiver. A malformed want is ignored.
    void take(const detail::received_frame& frame);
    static bool carries(protocol::message_type t) {
        return t == protocol::message_type::page_want || t == protocol::message_type::page_end;
    }

    // Ends run(); the dump's CRIU reads end of stream and ends.
    void close();
    // True if it was closed before the receiver had every page: the dump's
    // CRIU may fail then (a reply cut off), which is no news.
    bool cut_short() const { return closed_ && !receiver_done_; }
    std::uint64_t pages_total() const { return total_pages_; }

private:
    // Pages [page, page + pages) of ranges_[range].
    struct run_of_pages {
        std::size_t range = 0;
        std::uint64_t page = 0, pages = 0;
    };
    bool next(run_of_pages& out);
    void want(const protocol::page_want& wanted);
    void wake();
    page_server_iov request_for(const run_of_pages& r) const;

    asio::local::stream_protocol::socket criu_;
    asio::steady_timer wake_;
    std::vector<lazy_range> ranges_;
    std::vector<std::vector<bool>> sent_;  // per range, per page: asked of CRIU already
    std::size_t cursor_range_ = 0;         // the stream's place
    std::uint64_t cursor_page_ = 0;
    std::deque<run_of_pages> first_;  // wanted, before the stream
    std::uint64_t total_pages_ = 0;
    std::uint64_t sent_again_ = 0;  // pages wanted after they were sent
    bool ahead_ = false, closed_ = false, receiver_done_ = false, hopeless_ = false;
};

}  // namespace rfork::agent
