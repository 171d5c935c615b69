#include "send/page_stream.hpp"

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <algorithm>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {

// One request to CRIU at most this many pages: its page server keeps pages
// in pipes of 1 MiB and answers within one. A few in flight keep it busy
// while the last answer goes out on the connection.
constexpr std::uint64_t request_pages = 256;
constexpr std::size_t requests_in_flight = 4;
// Wants queued beyond this are dropped: a receiver asks for each page at
// most a few times, a hostile one could ask without end.
constexpr std::size_t max_wanted = 1 << 16;
constexpr std::uint64_t max_sent_again = 8;

}  // namespace

page_stream::page_stream(const asio::any_io_executor& ex, unique_fd criu, std::vector<lazy_range> ranges)
    : criu_(ex, asio::local::stream_protocol(), criu.release()),
      wake_(ex, asio::steady_timer::time_point::max()),
      ranges_(std::move(ranges)) {
    sent_.reserve(ranges_.size());
    for (auto& r : ranges_) {
        sent_.emplace_back(static_cast<std::size_t>(r.pages), false);
        total_pages_ += r.pages;
    }
}

page_server_iov page_stream::request_for(const run_of_pages& r) const {
    auto& range = ranges_[r.range];
    return page_server::request(range.process, range.address + r.page * protocol::page_size, r.pages);
}

bool page_stream::next(run_of_pages& out) {
    if (receiver_done_ || closed_ || hopeless_) return false;
    if (!first_.empty()) {
        out = first_.front();
        first_.pop_front();
        if (out.pages > request_pages) {
            first_.push_front({out.range, out.page + request_pages, out.pages - request_pages});
            out.pages = request_pages;
        }
        auto& sent = sent_[out.range];
        std::fill_n(sent.begin() + static_cast<std::ptrdiff_t>(out.page), out.pages, true);
        return true;
    }
    for (; ahead_ && cursor_range_ < ranges_.size(); ++cursor_range_, cursor_page_ = 0) {
        auto& sent = sent_[cursor_range_];
        auto pages = ranges_[cursor_range_].pages;
        while (cursor_page_ < pages && sent[cursor_page_]) ++cursor_page_;
        if (cursor_page_ == pages) continue;
        out = {cursor_range_, cursor_page_, 0};
        while (cursor_page_ < pages && !sent[cursor_page_] && out.pages < request_pages) {
            sent[cursor_page_++] = true;
            ++out.pages;
        }
        return true;
    }
    return false;
}

void page_stream::want(const protocol::page_want& wanted) {
    auto begin = wanted.address, end = wanted.address + wanted.pages * protocol::page_size;
    // The first range of the process that could hold `begin`: the one before
    // the first that starts after it.
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), std::pair(wanted.process, begin),
                               [](const std::pair<std::uint64_t, std::uint64_t>& key, const lazy_range& r) {
                                   return key.first != r.process ? key.first < r.process : key.second < r.address;
                               });
    if (it != ranges_.begin() && std::prev(it)->process == wanted.process) --it;
    bool any = false;
    for (; it != ranges_.end() && it->process == wanted.process && it->address < end; ++it) {
        auto range_end = it->address + it->pages * protocol::page_size;
        auto lo = std::max(begin, it->address), hi = std::min(end, range_end);
        if (lo >= hi) continue;
        any = true;
        auto range = static_cast<std::size_t>(it - ranges_.begin());
        auto page = (lo - it->address) / protocol::page_size, pages = (hi - lo) / protocol::page_size;
        // Pages sent already go again (the receiver let them go, or they
        // crossed, or the child forked while they came and its copy needs
        // them too), but not without end: the memory a few times over.
        auto again = static_cast<std::uint64_t>(std::count(sent_[range].begin() + static_cast<std::ptrdiff_t>(page),
                                                           sent_[range].begin() + static_cast<std::ptrdiff_t>(page + pages),
                                                           true));
        // Beyond that the receiver is told at once that no more come, so its
        // child fails now rather than at --image-timeout.
        if (first_.size() >= max_wanted || sent_again_ + again > max_sent_again * total_pages_) {
            hopeless_ = true;
            break;
        }
        sent_again_ += again;
        // Marked now, not when it leaves the queue: the same want twice counts as again.
        std::fill_n(sent_[range].begin() + static_cast<std::ptrdiff_t>(page), pages, true);
        first_.push_back({range, page, pages});
    }
    // The receiver's daemon knows the lazy pages from the same image: pages
    // outside them can never come, and the child could not be whole.
    if (!any) hopeless_ = true;
    wake();
}

void page_stream::take(const detail::received_frame& frame) {
    if (frame.type == protocol::message_type::page_end) {
        receiver_done_ = true;
        wake();
        return;
    }
    protocol::page_want wanted;
    if (!protocol::decode(frame.payload, wanted)) want(wanted);
}

void page_stream::wake() { wake_.cancel(); }

void page_stream::go_ahead() {
    ahead_ = true;
    wake();
}

void page_stream::close() {
    closed_ = true;
    // Shut down, not only closed: a process the agent forked to start CRIU
    // in a namespace (spawn's `join`) holds a copy of this fd until CRIU
    // ends, and CRIU must read the end now.
    std::error_code ignored;
    criu_.shutdown(asio::socket_base::shutdown_both, ignored);
    criu_.close(ignored);
    wake();
}

asio::awaitable<void> page_stream::run(std::shared_ptr<page_stream> self, std::shared_ptr<peer_connection> peer) {
    std::deque<run_of_pages> asked;  // of CRIU, which answers in order
    // One frame's room, used again for each: its header, the push's head, the pages.
    detail::bytes room(protocol::frame_header_size + protocol::page_push_head::size +
                       request_pages * protocol::page_size);
    bool criu_failed = false;
    for (;;) {
        run_of_pages r;
        while (asked.size() < requests_in_flight && self->next(r)) {
            auto request = page_server::encode(self->request_for(r));
            auto [ec, n] = co_await asio::async_write(self->criu_, asio::buffer(request), as_tuple_awaitable);
            if (ec) {
                criu_failed = true;
                break;
            }
            asked.push_back(r);
        }
        if (criu_failed || self->closed_ || (asked.empty() && (self->receiver_done_ || self->hopeless_))) break;
        if (asked.empty()) {  // all sent: wait for wants, or for the receiver to have them all
            self->wake_.expires_at(asio::steady_timer::time_point::max());
            co_await self->wake_.async_wait(as_tuple_awaitable);
            continue;
        }
        page_server::wire head;
        auto [ec, n] = co_await asio::async_read(self->criu_, asio::buffer(head), as_tuple_awaitable);
        auto asked_for = self->request_for(asked.front());
        auto got = page_server::decode(head);
        if (ec || !page_server::answers(got, asked_for)) {
            criu_failed = true;
            break;
        }
        auto bytes = static_cast<std::size_t>(got.pages * protocol::page_size);
        auto frame = std::span(room).first(protocol::frame_header_size + protocol::page_push_head::size + bytes);
        auto payload = frame.subspan(protocol::frame_header_size);
        protocol::put_page_push_head(payload, {got.process, got.address});
        auto [ec2, n2] = co_await asio::async_read(
            self->criu_, asio::buffer(payload.data() + protocol::page_push_head::size, bytes), as_tuple_awaitable);
        if (ec2) {
            criu_failed = true;
            break;
        }
        protocol::seal_frame(protocol::message_type::page_push, frame);
        if (!co_await peer->send(frame)) break;
        // CRIU may answer with fewer pages than asked: the rest comes next.
        auto done = asked.front();
        asked.pop_front();
        if (got.pages < done.pages) self->first_.push_front({done.range, done.page + got.pages, done.pages - got.pages});
    }
    bool tell = (criu_failed || self->hopeless_) && !self->closed_;
    self->close();
    if (tell) {
        auto end = protocol::encode_frame(protocol::message_type::page_end, {});
        co_await peer->send(end);
    }
}

}  // namespace rfork::agent
