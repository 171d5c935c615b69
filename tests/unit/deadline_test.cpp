// Reading a frame by a deadline (agent/peer/deadline.hpp), on a real socket pair.
#include "peer/deadline.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/use_future.hpp>
#include <asio/write.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <future>

using namespace std::chrono_literals;
using socket_type = asio::local::stream_protocol::socket;

namespace {

struct pair_of_sockets {
    asio::io_context io;
    socket_type ours{io}, theirs{io};
    pair_of_sockets() { asio::local::connect_pair(ours, theirs); }
};

template <typename T>
T run(asio::io_context& io, asio::awaitable<T> task) {
    auto done = asio::co_spawn(io, std::move(task), asio::use_future);
    io.run_for(10s);  // a bound for a broken test; the deadlines below are far shorter
    // use_future completes the future from Asio's system thread pool: a moment
    // after the io_context has run the task to its end.
    REQUIRE(done.wait_for(10s) == std::future_status::ready);
    return done.get();
}

}  // namespace

TEST_SUITE("unit.deadline") {
    TEST_CASE("a silent peer's frame times out") {
        pair_of_sockets s;
        rfork::detail::received_frame frame;
        auto started = std::chrono::steady_clock::now();
        auto ec = run(s.io, rfork::agent::read_frame_within(s.ours, frame, rfork::protocol::max_control_payload,
                                                            std::chrono::milliseconds(50)));
        CHECK(ec == rfork::errc::timed_out);
        CHECK(std::chrono::steady_clock::now() - started < 5s);
    }

    TEST_CASE("a frame that comes in time is read") {
        pair_of_sockets s;
        auto sent = rfork::protocol::encode(rfork::protocol::image_end{});
        asio::write(s.theirs, asio::buffer(sent));
        rfork::detail::received_frame frame;
        auto ec = run(s.io, rfork::agent::read_frame_within(s.ours, frame, rfork::protocol::max_control_payload, 10s));
        CHECK_FALSE(ec);
        CHECK(frame.type == rfork::protocol::message_type::image_end);
    }

    TEST_CASE("a deadline already passed fails the next read at once") {
        pair_of_sockets s;
        rfork::agent::watchdog<socket_type> due(s.ours, std::chrono::milliseconds(1));
        rfork::detail::received_frame frame;
        auto first = run(s.io, rfork::agent::read_frame_within(s.ours, frame, 1024, due));
        CHECK(first == rfork::errc::timed_out);
        s.io.restart();
        auto sent = rfork::protocol::encode(rfork::protocol::image_end{});
        asio::write(s.theirs, asio::buffer(sent));
        auto second = run(s.io, rfork::agent::read_frame_within(s.ours, frame, 1024, due));
        CHECK(second == rfork::errc::timed_out);
    }
}
