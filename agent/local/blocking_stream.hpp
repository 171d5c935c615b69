// Reads and writes that may block (a regular file, a file on FUSE, a pipe
// the agent could not reopen), done on a thread of the stream's own: the
// agent's I/O thread only waits, through the reactor, for the result. A call
// that never returns holds that thread and the fd, never the agent: the
// thread is detached and touches nothing of Asio's, and closing the stream
// ends any wait for it.
#pragma once

#include "common/process.hpp"
#include "common/run_as.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>

namespace rfork::agent {

class blocking_stream {
public:
    // With `as` (a user's fd), the thread does its calls as that user: with
    // the user's groups and file-system ids and no capability, so that the
    // kernel's checks at read and write time (/proc files, root's reserved
    // blocks) are the user's.
    // At most 256 threads per user and 4096 in all: past that, the stream
    // is as if closed.
    blocking_stream(const asio::any_io_executor& ex, unique_fd fd, std::optional<run_as> as = std::nullopt);
    ~blocking_stream();
    blocking_stream(const blocking_stream&) = delete;
    blocking_stream& operator=(const blocking_stream&) = delete;

    // One call at a time. A span's bytes are the caller's, which awaits the
    // call at once.
    // Some bytes; 0 at the end of input, on an error, or once closed.
    asio::awaitable<std::size_t> read_some(std::span<unsigned char> buffer);
    // All of `data`; false on an error, or once closed.
    asio::awaitable<bool> write_all(std::span<const unsigned char> data);
    // Ends a wait in progress (it reports the end). The fd is closed now, or
    // by the thread once a call it is in returns.
    void close();

    struct state;  // shared with the thread

private:
    bool start();  // the thread and its eventfd, at the first call
    // Hands the job in state_ to the thread; its result, or nullopt once closed.
    asio::awaitable<std::optional<std::size_t>> run(bool write);

    asio::any_io_executor ex_;
    std::shared_ptr<state> state_;
    std::optional<asio::posix::stream_descriptor> done_;  // the thread's eventfd: readable once a job is done
    bool closed_ = false;
};

}  // namespace rfork::agent
