#include "parent_stdio.hpp"

#include <rfork/detail/frame_io.hpp>

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rfork::agent {

namespace {

// A new open file of our own on a pipe, FIFO or terminal the parent has open.
unique_fd reopen(int fd, int flags) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) return unique_fd{};
    return unique_fd(::open(fmt::format("/proc/self/fd/{}", fd).c_str(), flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
}

}  // namespace

output_sink::output_sink(const asio::any_io_executor& ex, unique_fd received) {
    if (auto own = reopen(received.get(), O_WRONLY)) {
        stream_.emplace(ex, own.release());
    } else {
        fd_ = std::move(received);
    }
}

asio::awaitable<void> output_sink::write(std::span<const unsigned char> data) {
    if (broken_) co_return;
    if (stream_) {
        auto [ec, n] = co_await asio::async_write(*stream_, asio::buffer(data.data(), data.size()),
                                                  detail::as_tuple_awaitable);
        broken_ = static_cast<bool>(ec);
        co_return;
    }
    while (!data.empty() && fd_) {
        auto n = ::write(fd_.get(), data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            broken_ = true;
            co_return;
        }
        data = data.subspan(static_cast<std::size_t>(n));
    }
}

input_source::input_source(const asio::any_io_executor& ex, unique_fd received) {
    if (auto own = reopen(received.get(), O_RDONLY)) {
        stream_.emplace(ex, own.release());
    } else {
        fd_ = std::move(received);
    }
}

void input_source::close() {
    std::error_code ignored;
    if (stream_) stream_->close(ignored);
    fd_.reset();
}

asio::awaitable<std::size_t> input_source::read(std::span<unsigned char> buffer) {
    if (stream_) {
        auto [ec, n] = co_await stream_->async_read_some(asio::buffer(buffer.data(), buffer.size()),
                                                         detail::as_tuple_awaitable);
        co_return ec ? 0 : n;
    }
    // A regular file: it cannot block for long.
    if (!fd_) co_return 0;
    ssize_t n;
    do {
        n = ::read(fd_.get(), buffer.data(), buffer.size());
    } while (n < 0 && errno == EINTR);
    co_return n > 0 ? static_cast<std::size_t>(n) : 0;
}

}  // namespace rfork::agent
