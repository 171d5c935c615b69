#include "page_relay.hpp"

#include <asio/write.hpp>

#include <sys/socket.h>

#include <system_error>
#include <vector>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {
constexpr std::size_t page_chunk = 256 * 1024;
}

page_socket_pair make_page_sockets() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

page_relay::page_relay(const asio::any_io_executor& ex, unique_fd agent_end)
    : socket_(ex, asio::local::stream_protocol(), agent_end.release()) {}

asio::awaitable<void> page_relay::pump_out(std::shared_ptr<page_relay> self, sender send) {
    std::vector<unsigned char> buffer(page_chunk);
    for (;;) {
        auto [ec, n] = co_await self->socket_.async_read_some(asio::buffer(buffer), as_tuple_awaitable);
        if (n > 0) {
            self->bytes_out_ += n;
            auto frame = protocol::encode_frame(protocol::message_type::page_data, std::span(buffer.data(), n));
            if (!co_await send(frame)) co_return;
        }
        if (ec) break;  // CRIU closed its end (or we closed ours)
    }
    auto end = protocol::encode_frame(protocol::message_type::page_end, {});
    co_await send(end);
}

asio::awaitable<void> page_relay::take(const detail::received_frame& frame) {
    std::error_code ignored;
    if (frame.type == protocol::message_type::page_end) {
        socket_.shutdown(asio::socket_base::shutdown_send, ignored);
        co_return;
    }
    bytes_in_ += frame.payload.size();
    // Backpressure: the peer's frames wait while CRIU is slow to read.
    co_await asio::async_write(socket_, asio::buffer(frame.payload), as_tuple_awaitable);
}

void page_relay::close() {
    std::error_code ignored;
    socket_.close(ignored);
}

}  // namespace rfork::agent
