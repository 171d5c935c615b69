#include "receive/lazy_page_server.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <cstring>
#include <vector>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {

// CRIU's daemon asks for at most 4 MiB at a time (and a want names no more).
constexpr std::uint64_t max_request_pages = protocol::max_want_pages;

}  // namespace

lazy_page_server::lazy_page_server(const asio::any_io_executor& ex, unique_fd daemon, std::uint64_t max_in,
                                   std::uint64_t max_held)
    : daemon_(ex, asio::local::stream_protocol(), daemon.release()),
      wake_(ex, asio::steady_timer::time_point::max()),
      max_in_(max_in),
      max_held_pages_(max_held / protocol::page_size) {}

bool lazy_page_server::take(const detail::received_frame& frame) {
    if (frame.type == protocol::message_type::page_end) {
        sender_done_ = true;
        wake();
        return true;
    }
    if (closed_) return true;  // the daemon is done, or cut off: nothing needs more pages
    protocol::page_push_head head;
    std::uint64_t count = 0;
    if (protocol::decode_page_push(frame.payload, head, count)) {
        close();
        return true;
    }
    auto* data = frame.payload.data() + protocol::page_push_head::size;
    for (std::uint64_t i = 0; i < count; ++i, data += protocol::page_size) {
        auto [at, added] = pages_.try_emplace({head.process, head.address + i * protocol::page_size}, nullptr);
        if (!added) continue;  // a page here already stays (sent again: it was wanted while on its way)
        // Counted the first time it comes: the sender cannot pass a bound by
        // sending a page twice, nor a child be cut off for pages sent again
        // (they crossed its wants, or a child of it that forked needs them).
        if (seen_.insert(at->first).second) bytes_in_ += protocol::page_size;
        if (bytes_in_ > max_in_ || pages_.size() > max_held_pages_) {  // more than allowed, or announced
            pages_.erase(at);
            close();
            return false;
        }
        at->second = pool_.take();
        if (!at->second) {
            pages_.erase(at);
            close();  // no room: the daemon cannot have its pages
            return true;
        }
        std::memcpy(at->second, data, protocol::page_size);
    }
    wake();
    return true;
}

bool lazy_page_server::whole(const page_server_iov& request) const {
    for (std::uint64_t i = 0; i < request.pages; ++i)
        if (!pages_.count({request.process, request.address + i * protocol::page_size})) return false;
    return true;
}

void lazy_page_server::release(const page_server_iov& request) {
    // A page that a request still waiting also names stays: it was here
    // when that request came, so nobody asked the sender for it again (the
    // daemon asks twice for the pages of a child that forks meanwhile).
    auto still_named = [this](std::uint64_t process, std::uint64_t address) {
        for (auto& r : asked_)
            if (r.process == process && address >= r.address && address - r.address < r.pages * protocol::page_size)
                return true;
        return false;
    };
    for (std::uint64_t i = 0; i < request.pages; ++i) {
        auto address = request.address + i * protocol::page_size;
        if (still_named(request.process, address)) continue;
        auto found = pages_.find({request.process, address});
        if (found == pages_.end()) continue;
        pool_.give_back(found->second);
        pages_.erase(found);
    }
}

void lazy_page_server::wake() { wake_.cancel(); }

void lazy_page_server::close() {
    closed_ = true;
    std::error_code ignored;  // shut down: the daemon reads the end even if a copy of the fd lives on
    daemon_.shutdown(asio::socket_base::shutdown_both, ignored);
    daemon_.close(ignored);
    wake();
    // Safe while a write to the daemon is pending: the agent runs one thread,
    // and closing the socket ended that write before the pages go.
    pages_.clear();
    seen_.clear();
    pool_.clear();
}

asio::awaitable<void> lazy_page_server::read_requests(std::shared_ptr<lazy_page_server> self,
                                                      std::shared_ptr<peer_connection> peer) {
    for (;;) {
        page_server::wire raw;
        auto [ec, n] = co_await asio::async_read(self->daemon_, asio::buffer(raw), as_tuple_awaitable);
        if (ec) co_return;  // the daemon has ended (its child has every page) or failed
        auto request = page_server::decode(raw);
        if (request.command == page_server::close_session || request.command == page_server::force_close_session) {
            // The daemon is done and says so: it waits for a status, 0.
            std::int32_t status = 0;
            co_await asio::async_write(self->daemon_, asio::buffer(&status, sizeof status), as_tuple_awaitable);
            co_return;
        }
        if (request.command != page_server::get_pages ||
            !protocol::is_page_run(request.address, request.pages, max_request_pages)) {
            self->close();  // not a request CRIU makes
            co_return;
        }
        self->asked_.push_back(request);
        self->wake();
        // The pages not here yet, from the first missing to the last, go
        // before all others (a few may be on their way already).
        std::uint64_t first = request.pages, last = 0;
        for (std::uint64_t i = 0; i < request.pages; ++i) {
            if (self->pages_.count({request.process, request.address + i * protocol::page_size})) continue;
            first = std::min(first, i);
            last = i;
        }
        if (first == request.pages) continue;
        auto want = protocol::encode(protocol::page_want{
            request.process, request.address + first * protocol::page_size, last - first + 1});
        if (!co_await peer->send(want)) co_return;
    }
}

asio::awaitable<void> lazy_page_server::answer_requests(std::shared_ptr<lazy_page_server> self) {
    std::vector<asio::const_buffer> gathered;
    for (;;) {
        while (!self->closed_ && !self->asked_.empty() && self->whole(self->asked_.front())) {
            auto request = self->asked_.front();
            auto head = page_server::encode(page_server::answer(request, request.pages));
            gathered.assign(1, asio::buffer(head));
            // Runs of pages that lie together in one push go as one buffer.
            for (std::uint64_t i = 0; i < request.pages; ++i) {
                auto* data = self->pages_.at({request.process, request.address + i * protocol::page_size});
                auto& last = gathered.back();
                if (gathered.size() > 1 && static_cast<const unsigned char*>(last.data()) + last.size() == data)
                    last = asio::const_buffer(last.data(), last.size() + protocol::page_size);
                else
                    gathered.emplace_back(data, protocol::page_size);
            }
            auto [ec, n] = co_await asio::async_write(self->daemon_, gathered, as_tuple_awaitable);
            if (ec) co_return;
            self->asked_.pop_front();
            self->release(request);
        }
        // Nothing more comes from the sender: a request still open can never
        // be answered, and the daemon must not wait for it.
        if (self->closed_ || (self->sender_done_ && !self->asked_.empty())) co_return;
        self->wake_.expires_at(asio::steady_timer::time_point::max());
        co_await self->wake_.async_wait(as_tuple_awaitable);
    }
}

asio::awaitable<void> lazy_page_server::serve(std::shared_ptr<lazy_page_server> self,
                                              std::shared_ptr<peer_connection> peer) {
    using namespace asio::experimental::awaitable_operators;
    co_await (read_requests(self, peer) || answer_requests(self));
    self->close();
    auto end = protocol::encode_frame(protocol::message_type::page_end, {});
    co_await peer->send(end);
}

}  // namespace rfork::agent
