#include "local/parent_stdio.hpp"

#include <rfork/detail/frame_io.hpp>

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rfork::agent {

namespace {

// Whether the open file allows `access` (O_RDONLY or O_WRONLY). An O_PATH fd
// allows neither, though its access bits read as O_RDONLY.
bool allows(int fd, int access) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_PATH)) return false;
    int mode = flags & O_ACCMODE;
    return mode == O_RDWR || mode == access;
}

// A new open file of our own on a pipe, FIFO or terminal the parent has open,
// with an access the caller checked the parent's open file has. Root may
// open anything: /proc/self/fd/N of a pipe's read end opens its write end too.
unique_fd reopen(int fd, int access) {
    return unique_fd(::open(fmt::format("/proc/self/fd/{}", fd).c_str(), access | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
}

// Whether a socket is a stream socket, or not a unix one.
bool stream_or_not_unix(int fd) {
    int domain = 0, type = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return false;
    len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return false;
    return domain != AF_UNIX || type == SOCK_STREAM;
}

}  // namespace

parent_fd::parent_fd(const asio::any_io_executor& ex, unique_fd received, direction d, const run_as* as) {
    int access = d == direction::in ? O_RDONLY : O_WRONLY;
    struct stat st {};
    if (!received || !allows(received.get(), access) || ::fstat(received.get(), &st) != 0) return;
    if (S_ISFIFO(st.st_mode) || (!as && S_ISCHR(st.st_mode))) {
        if (auto own = reopen(received.get(), access)) {
            reopened_.emplace(ex, own.release());
            return;
        }
    }
    if (as) {
        // A message on a unix datagram socket names its sender's pid, this
        // agent's (sd_notify, syslog): a user's output never goes out so.
        if (S_ISSOCK(st.st_mode) && !stream_or_not_unix(received.get())) return;
        other_.emplace(ex, std::move(received), *as);
    } else if (S_ISSOCK(st.st_mode)) {
        socket_.emplace(ex, std::move(received),
                        d == direction::in ? shared_socket::direction::in : shared_socket::direction::out);
    } else {
        // A regular file, or a pipe or terminal that would not reopen (a FIFO
        // without readers, /dev/tty): blocking calls, off the I/O thread.
        other_.emplace(ex, std::move(received));
    }
}

asio::awaitable<std::size_t> parent_fd::read_some(std::span<unsigned char> buffer) {
    if (reopened_) {
        auto [ec, n] = co_await reopened_->async_read_some(asio::buffer(buffer.data(), buffer.size()),
                                                           detail::as_tuple_awaitable);
        co_return ec ? 0 : n;
    }
    if (socket_) co_return co_await socket_->read_some(buffer);
    if (other_) co_return co_await other_->read_some(buffer);
    co_return 0;
}

asio::awaitable<bool> parent_fd::write_all(std::span<const unsigned char> data) {
    if (reopened_) {
        auto [ec, n] = co_await asio::async_write(*reopened_, asio::buffer(data.data(), data.size()),
                                                  detail::as_tuple_awaitable);
        co_return !ec;
    }
    if (socket_) co_return co_await socket_->write_all(data);
    if (other_) co_return co_await other_->write_all(data);
    co_return false;
}

void parent_fd::close() {
    std::error_code ignored;
    if (reopened_) reopened_->close(ignored);
    if (socket_) socket_->close();
    if (other_) other_->close();
}

output_sink::output_sink(const asio::any_io_executor& ex, unique_fd received, const run_as* as)
    : fd_(ex, std::move(received), parent_fd::direction::out, as) {}

asio::awaitable<void> output_sink::write(std::span<const unsigned char> data) {
    if (broken_) co_return;
    broken_ = !co_await fd_.write_all(data);
}

input_source::input_source(const asio::any_io_executor& ex, unique_fd received, const run_as* as)
    : fd_(ex, std::move(received), parent_fd::direction::in, as) {}

void input_source::close() { fd_.close(); }

asio::awaitable<std::size_t> input_source::read(std::span<unsigned char> buffer) {
    co_return co_await fd_.read_some(buffer);
}

}  // namespace rfork::agent
