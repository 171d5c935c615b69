// Reading a frame by a deadline. A watchdog cancels the connection's pending
// operations when its time is up; a read that then fails, or one started
// after, says errc::timed_out rather than "operation aborted". One watchdog
// may bound several reads (and the writes between them): the time is the
// whole exchange's, not each read's.
#pragma once

#include "common/watchdog.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <system_error>

namespace rfork::agent {

// `stream`, `frame` and `due` are the caller's, which awaits this at
// once (a coroutine frame holding references to them never outlives them).
template <typename Stream>
asio::awaitable<std::error_code> read_frame_within(Stream& stream, detail::received_frame& frame,
                                                   std::uint32_t limit, const watchdog<Stream>& due) {
    if (due.fired()) co_return errc::timed_out;  // a deadline passed between reads cancels nothing
    auto ec = co_await detail::read_frame(stream, frame, limit);
    co_return due.timed_out_or(ec);
}

// One read with a bound of its own.
template <typename Stream>
asio::awaitable<std::error_code> read_frame_within(Stream& stream, detail::received_frame& frame,
                                                   std::uint32_t limit, std::chrono::steady_clock::duration within) {
    watchdog<Stream> due(stream, within);
    auto ec = co_await read_frame_within(stream, frame, limit, due);
    due.stop();
    co_return ec;
}

}  // namespace rfork::agent
