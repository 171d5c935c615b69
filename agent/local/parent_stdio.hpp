// The parent's stdout, stderr and stdin as its agent uses them to relay the
// child's output and input. The agent received the parent's own fds, and
// runs as root:
// - it never changes their flags (O_NONBLOCK is shared with the parent), so
//   pipes, FIFOs and terminals are reopened as open files of the agent's own,
//   sockets are used through calls that do not block by themselves
//   (shared_socket.hpp), and anything else, a regular file say, on a thread
//   of its own (blocking_stream.hpp): nothing blocks the agent's I/O thread;
// - it never gains access the parent lacks: an fd is used, or reopened, only
//   in a direction its open file allows (not at all if opened with O_PATH).
//   A stdout or stderr not open for writing is as if closed (the child's
//   output to it is dropped); a stdin not open for reading is at its end;
// - for a user's program (`as`), it acts as that user: only a pipe or FIFO is
//   reopened (what root reopens by a device number, a terminal hung up at
//   logout, would be live again), and everything else, sockets and devices
//   included, is used through the parent's own open file, on a thread with
//   the user's groups and file-system ids and no capability: the kernel's
//   checks at read and write time are the user's. A unix socket other than
//   a stream one is not written at all: its messages name the agent's pid.
#pragma once

#include "local/blocking_stream.hpp"
#include "common/process.hpp"
#include "local/shared_socket.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstddef>
#include <optional>
#include <span>

namespace rfork::agent {

// One of the parent's stdio fds, in the one direction the agent uses it.
// Here and below, a span's bytes are the caller's, which awaits the call at
// once; the object itself is owned by the relay that awaits it.
class parent_fd {
public:
    enum class direction { in, out };
    parent_fd(const asio::any_io_executor& ex, unique_fd received, direction d, const run_as* as);

    // False when the fd is closed, or not open in that direction.
    bool usable() const { return reopened_ || socket_ || other_; }
    // One call at a time. Some bytes; 0 at the end, on an error or once closed.
    asio::awaitable<std::size_t> read_some(std::span<unsigned char> buffer);
    // All of `data`; false when they cannot go (or once closed).
    asio::awaitable<bool> write_all(std::span<const unsigned char> data);
    void close();

private:
    std::optional<asio::posix::stream_descriptor> reopened_;  // pipes, FIFOs, terminals
    std::optional<shared_socket> socket_;
    std::optional<blocking_stream> other_;
};

class output_sink {
public:
    output_sink(const asio::any_io_executor& ex, unique_fd received, const run_as* as = nullptr);

    // False when the child's output to it is dropped from the start.
    bool usable() const { return fd_.usable(); }
    // Writes all of `data`, or drops it once the destination is gone (a
    // closed pipe): the child's output then has nowhere to go.
    asio::awaitable<void> write(std::span<const unsigned char> data);

private:
    parent_fd fd_;
    bool broken_ = false;
};

class input_source {
public:
    input_source(const asio::any_io_executor& ex, unique_fd received, const run_as* as = nullptr);

    bool usable() const { return fd_.usable(); }
    // Reads some bytes; 0 at end of input (or on an error, or after close()).
    asio::awaitable<std::size_t> read(std::span<unsigned char> buffer);
    void close();

private:
    parent_fd fd_;
};

}  // namespace rfork::agent
