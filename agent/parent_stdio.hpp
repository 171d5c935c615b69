// The parent's stdout, stderr and stdin as its agent uses them to relay the
// child's output and input. The agent received the parent's own fds; it must
// never change their flags (O_NONBLOCK is shared with the parent), so pipes
// and terminals are reopened as open files of the agent's own.
#pragma once

#include "process.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstddef>
#include <optional>
#include <span>

namespace rfork::agent {

class output_sink {
public:
    output_sink(const asio::any_io_executor& ex, unique_fd received);

    // Writes all of `data`, or drops it once the destination is gone (a
    // closed pipe): the child's output then has nowhere to go.
    asio::awaitable<void> write(std::span<const unsigned char> data);

private:
    unique_fd fd_;  // regular files and sockets: blocking writes at the parent's own offset
    std::optional<asio::posix::stream_descriptor> stream_;
    bool broken_ = false;
};

class input_source {
public:
    input_source(const asio::any_io_executor& ex, unique_fd received);

    // Reads some bytes; 0 at end of input (or on an error, or after close()).
    asio::awaitable<std::size_t> read(std::span<unsigned char> buffer);
    void close();

private:
    unique_fd fd_;
    std::optional<asio::posix::stream_descriptor> stream_;
};

}  // namespace rfork::agent
