// A socket the agent shares with another process (a parent's stdin or
// stdout): its file description, O_NONBLOCK included, is that process's too,
// so the agent never changes its flags. Asio's descriptors would (they make
// every fd they wait on non-blocking), so the socket is waited on through an
// epoll instance of the agent's own, and each call is non-blocking by itself
// (MSG_DONTWAIT): the agent's I/O thread never blocks on it.
#pragma once

#include "common/process.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstddef>
#include <optional>
#include <span>

namespace rfork::agent {

class shared_socket {
public:
    enum class direction { in, out };
    // `socket` is a socket, used in that one direction.
    shared_socket(const asio::any_io_executor& ex, unique_fd socket, direction d);

    // Some bytes; 0 at the end of input, on an error, or once closed. (A
    // span's bytes are the caller's, which awaits the call at once.)
    asio::awaitable<std::size_t> read_some(std::span<unsigned char> buffer);
    // All of `data`; false on an error, or once closed.
    asio::awaitable<bool> write_all(std::span<const unsigned char> data);
    // Ends a wait in progress (it reports the end).
    void close();

private:
    asio::awaitable<bool> ready();  // false once closed

    unique_fd socket_;
    std::optional<asio::posix::stream_descriptor> epoll_;  // readable once the socket is ready
};

}  // namespace rfork::agent
