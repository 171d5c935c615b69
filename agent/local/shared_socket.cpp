#include "local/shared_socket.hpp"

#include <rfork/detail/frame_io.hpp>

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

namespace rfork::agent {

shared_socket::shared_socket(const asio::any_io_executor& ex, unique_fd socket, direction d)
    : socket_(std::move(socket)) {
    // The reactor may make the epoll fd non-blocking: it is ours alone.
    unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    epoll_event interest{};
    interest.events = d == direction::in ? EPOLLIN | EPOLLRDHUP : EPOLLOUT;
    if (!epoll || ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, socket_.get(), &interest) != 0) {
        socket_.reset();  // cannot wait on it: as if closed
        return;
    }
    epoll_.emplace(ex, epoll.release());
}

void shared_socket::close() {
    std::error_code ignored;
    if (epoll_) epoll_->close(ignored);
    socket_.reset();
}

// Level-triggered inside: every event on the socket wakes the epoll fd again,
// and each call below is tried before waiting, so no readiness is missed.
asio::awaitable<bool> shared_socket::ready() {
    if (!epoll_ || !epoll_->is_open()) co_return false;
    auto [ec] = co_await epoll_->async_wait(asio::posix::stream_descriptor::wait_read, detail::as_tuple_awaitable);
    co_return !ec && socket_;
}

asio::awaitable<std::size_t> shared_socket::read_some(std::span<unsigned char> buffer) {
    while (socket_) {
        auto n = ::recv(socket_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n >= 0) co_return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || !co_await ready()) break;
    }
    co_return 0;
}

asio::awaitable<bool> shared_socket::write_all(std::span<const unsigned char> data) {
    while (socket_ && !data.empty()) {
        auto n = ::send(socket_.get(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            data = data.subspan(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || !co_await ready()) break;
    }
    co_return data.empty() && socket_;
}

}  // namespace rfork::agent
