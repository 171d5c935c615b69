#include "peer/page_relay.hpp"

#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <sys/socket.h>

#include <system_error>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {
constexpr std::size_t page_chunk = 256 * 1024;
}

page_relay::page_relay(const asio::any_io_executor& ex, unique_fd agent_end, std::uint64_t max_in)
    : socket_(ex, asio::local::stream_protocol(), agent_end.release()), max_in_(max_in) {}

asio::awaitable<void> page_relay::pump_out(std::shared_ptr<page_relay> self, std::shared_ptr<peer_connection> peer) {
    std::vector<unsigned char> buffer(page_chunk);
    for (;;) {
        auto [ec, n] = co_await self->socket_.async_read_some(asio::buffer(buffer), as_tuple_awaitable);
        if (n > 0) {
            auto frame = protocol::encode_frame(protocol::message_type::page_data, std::span(buffer.data(), n));
            if (!co_await peer->send(frame)) co_return;
        }
        if (ec) break;  // CRIU closed its end (or we closed ours)
    }
    auto end = protocol::encode_frame(protocol::message_type::page_end, {});
    co_await peer->send(end);
}

asio::awaitable<bool> page_relay::take(const detail::received_frame& frame) {
    std::error_code ignored;
    if (frame.type == protocol::message_type::page_end) {
        socket_.shutdown(asio::socket_base::shutdown_send, ignored);
        co_return true;
    }
    bool within = bytes_in_ <= max_in_;
    bytes_in_ += frame.payload.size();
    if (bytes_in_ > max_in_) {
        close();
        co_return !within;  // false only when the limit is first crossed
    }
    // Backpressure: the peer's frames wait while CRIU is slow to read.
    co_await asio::async_write(socket_, asio::buffer(frame.payload), as_tuple_awaitable);
    co_return true;
}

void page_relay::close() {
    std::error_code ignored;
    socket_.close(ignored);
}

asio::awaitable<std::shared_ptr<page_relay>> start_page_criu(asio::any_io_executor ex, std::vector<std::string> command,
                                                             std::vector<fd_mapping> fds, std::optional<run_as> as,
                                                             child_process& criu, int join, std::uint64_t max_in) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    unique_fd criu_end(pair[0]), agent_end(pair[1]);
    auto ready = make_pipe();
    fds.push_back({criu_end.get(), criu_page_socket_fd});
    fds.push_back({ready.write.get(), criu_ready_fd});
    criu = spawn(command, fds, 0, as ? &*as : nullptr, join);
    criu_end.reset(), ready.write.reset();  // CRIU's now: its end, or its exit, ends the read below
    asio::posix::stream_descriptor ready_stream(ex, ready.read.release());
    char byte = 1;
    auto [ec, n] = co_await asio::async_read(ready_stream, asio::buffer(&byte, 1), as_tuple_awaitable);
    if (n != 1) co_return nullptr;
    co_return std::make_shared<page_relay>(ex, std::move(agent_end), max_in);
}

}  // namespace rfork::agent
