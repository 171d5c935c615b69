// Something that happens once, which any number of coroutines wait for.
#include "common/children.hpp"
#include "common/one_shot_event.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <future>

using namespace rfork::agent;

TEST_SUITE("unit.one_shot_event") {
    TEST_CASE("every waiter wakes once it is set and none before") {
        asio::io_context io;
        one_shot_event event(io.get_executor());
        int woken = 0;
        auto waiter = [&]() -> asio::awaitable<void> {
            co_await event.wait();
            ++woken;
        };
        auto a = asio::co_spawn(io, waiter(), asio::use_future);
        auto b = asio::co_spawn(io, waiter(), asio::use_future);
        io.poll();
        CHECK(woken == 0);
        CHECK_FALSE(event.happened());
        event.set();
        io.run_for(std::chrono::seconds(5));
        a.get();
        b.get();
        CHECK(woken == 2);
    }

    TEST_CASE("a wait after it happened ends at once") {
        asio::io_context io;
        one_shot_event event(io.get_executor());
        event.set();
        std::error_code result = asio::error::operation_aborted;
        event.async_wait([&](std::error_code ec) { result = ec; });
        io.run_for(std::chrono::seconds(5));
        CHECK_FALSE(result);
    }

    TEST_CASE("a forked child's end wakes a waiter with a completion token") {
        asio::io_context io;
        forked_child child(io.get_executor());
        bool woken = false;
        auto waiter = [&]() -> asio::awaitable<void> {
            auto [ec] = co_await child.ended.async_wait(rfork::detail::as_tuple_awaitable);
            woken = !ec;
        };
        auto done = asio::co_spawn(io, waiter(), asio::use_future);
        io.poll();
        CHECK_FALSE(woken);
        child.status = 0;
        child.ended.set();
        io.run_for(std::chrono::seconds(5));
        done.get();
        CHECK(woken);
    }

    TEST_CASE("a wait that loses a race to a timer is cancelled and the event is still unset") {
        using namespace asio::experimental::awaitable_operators;
        asio::io_context io;
        one_shot_event event(io.get_executor());
        asio::steady_timer timer(io, std::chrono::milliseconds(10));
        std::size_t winner = 99;
        auto race = [&]() -> asio::awaitable<void> {
            auto result = co_await (event.wait() || timer.async_wait(asio::use_awaitable));
            winner = result.index();
        };
        auto done = asio::co_spawn(io, race(), asio::use_future);
        // Bounded: without the cancellation reaching the event's wait, the
        // race would never end (nothing sets the event).
        io.run_for(std::chrono::seconds(5));
        // (use_future sets the future from Asio's system thread pool.)
        REQUIRE(done.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
        done.get();
        CHECK(winner == 1);
        CHECK_FALSE(event.happened());
    }
}
