// fork_remote and the parent's wait and kill without an agent: every form
// fails with agent_not_found and a message naming the socket, and a failed
// fork leaves nothing behind (no descriptor, no snapshot process).
#include "test_support.hpp"

#include <rfork/detail/fork_operation.hpp>
#include <rfork/rfork.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>

using rfork::errc;
using namespace std::chrono_literals;

namespace {

std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

// The children of this process that are still there, zombies included.
std::string children() {
    std::string all;
    for (auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream in(task.path() / "children");
        all += std::string(std::istreambuf_iterator<char>(in), {});
    }
    return all;
}

bool no_child_left() {
    errno = 0;
    return children().empty() && ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// A socket path where no agent listens (and none can: nothing is created there).
std::string missing_socket() {
    return (std::filesystem::temp_directory_path() / ("rfork-no-agent-" + std::to_string(::getpid()))).string();
}

rfork::fork_options options_for(std::string socket) {
    rfork::fork_options options;
    options.agent_socket = std::move(socket);
    return options;
}

// Runs the callback form to its end, within a bound; nothing if it never completed.
std::optional<std::tuple<std::error_code, rfork::fork_result>> fork_with_callback(const rfork::fork_options& options) {
    asio::io_context ctx;
    std::optional<std::tuple<std::error_code, rfork::fork_result>> done;
    rfork::async_fork_remote(ctx.get_executor(), "node2:7000", options,
                             [&](std::error_code ec, rfork::fork_result r) { done.emplace(ec, std::move(r)); });
    ctx.run_for(10s);
    return done;
}

}  // namespace

TEST_SUITE("unit.fork_remote") {
    // These two come first: a use_future below starts Asio's system thread
    // pool, and a process with more than one thread is not forked as a snapshot.
    TEST_CASE("a socket path over 107 bytes fails at once and leaves no descriptor and no process") {
        auto path = "/tmp/" + std::string(120, 'x');
        auto options = options_for(path);
        // The test runs where a fork takes a snapshot: the way that once leaked.
        REQUIRE(rfork::detail::can_snapshot(options));
        auto fds_before = open_fds();

        auto done = fork_with_callback(options);

        REQUIRE(done.has_value());
        auto& [ec, result] = *done;
        CHECK(ec == errc::agent_not_found);
        CHECK(result.error_message().starts_with("rfork: "));
        CHECK(result.error_message().find(path) != std::string::npos);
        CHECK(!result.is_parent());
        CHECK(!result.is_child());
        CHECK(open_fds() == fds_before);
        CHECK(no_child_left());
    }

    TEST_CASE("no agent at the socket: the snapshot is killed and reaped and no descriptor is left") {
        auto options = options_for(missing_socket());
        REQUIRE(rfork::detail::can_snapshot(options));
        auto fds_before = open_fds();

        auto done = fork_with_callback(options);

        REQUIRE(done.has_value());
        CHECK(std::get<0>(*done) == errc::agent_not_found);
        CHECK(std::get<1>(*done).error_message().find(options.agent_socket) != std::string::npos);
        CHECK(open_fds() == fds_before);
        CHECK(no_child_left());
    }

    TEST_CASE("use_future gets agent_not_found") {
        auto options = options_for(missing_socket());
        asio::io_context ctx;
        auto forked = rfork::async_fork_remote(ctx, "node2:7000", options, asio::use_future);
        ctx.run_for(10s);
        // use_future completes the future from Asio's system executor: ready soon after the run.
        REQUIRE(forked.wait_for(10s) == std::future_status::ready);
        try {
            forked.get();
            FAIL("no exception");
        } catch (const std::system_error& e) {
            CHECK(e.code() == errc::agent_not_found);
        }
        CHECK(no_child_left());
    }

    TEST_CASE("the error_code form sets the code and does not throw and the plain form throws the message") {
        auto options = options_for(missing_socket());
        asio::io_context ctx;
        auto body = [&]() -> asio::awaitable<void> {
            std::error_code ec;
            rfork::fork_result r = co_await rfork::fork_remote(ctx, "node2:7000", ec, options);
            CHECK(ec == errc::agent_not_found);
            CHECK(r.error_message().find(options.agent_socket) != std::string::npos);
            try {
                co_await rfork::fork_remote(ctx, "node2:7000", options);
                FAIL("no exception");
            } catch (const std::system_error& e) {
                CHECK(e.code() == errc::agent_not_found);
                CHECK(std::string(e.what()).find(options.agent_socket) != std::string::npos);
            }
        };
        auto done = asio::co_spawn(ctx, body(), asio::use_future);
        ctx.run_for(10s);
        REQUIRE(done.wait_for(10s) == std::future_status::ready);
        done.get();
        CHECK(no_child_left());
    }

    TEST_CASE("a bad endpoint fails before anything is asked") {
        asio::io_context ctx;
        std::optional<std::tuple<std::error_code, rfork::fork_result>> done;
        rfork::async_fork_remote(ctx, "no-port", options_for(missing_socket()),
                                 [&](std::error_code ec, rfork::fork_result r) { done.emplace(ec, std::move(r)); });
        ctx.run_for(10s);
        REQUIRE(done.has_value());
        CHECK(std::get<0>(*done) == errc::bad_endpoint);
        CHECK(std::get<1>(*done).error_message().find("no-port") != std::string::npos);
        CHECK(no_child_left());
    }

    TEST_CASE("wait and kill of a parent without an agent fail with agent_not_found in every form") {
        auto socket = missing_socket();
        rfork::fork_result parent(rfork::fork_result::side::parent, rfork::child_info{"c1", "node2", 7}, socket);
        asio::io_context ctx;
        std::optional<std::error_code> waited, killed;
        parent.async_wait(ctx, [&](std::error_code ec, int) { waited = ec; });
        parent.async_kill(ctx.get_executor(), SIGTERM, [&](std::error_code ec) { killed = ec; });
        auto body = [&]() -> asio::awaitable<void> {
            try {
                co_await parent.wait();
                FAIL("no exception");
            } catch (const std::system_error& e) {
                CHECK(e.code() == errc::agent_not_found);
                CHECK(std::string(e.what()).find(socket) != std::string::npos);
            }
        };
        auto done = asio::co_spawn(ctx, body(), asio::use_future);
        ctx.run_for(10s);
        REQUIRE(done.wait_for(10s) == std::future_status::ready);
        done.get();
        CHECK(waited == std::optional<std::error_code>(errc::agent_not_found));
        CHECK(killed == std::optional<std::error_code>(errc::agent_not_found));
    }

    TEST_CASE("wait and kill on a result that is no parent fail with not_a_parent") {
        rfork::fork_result child(rfork::fork_result::side::child, rfork::child_info{"c1", "node2", 7});
        asio::io_context ctx;
        auto waited = child.async_wait(ctx, asio::use_future);
        auto killed = rfork::fork_result().async_kill(ctx, SIGTERM, asio::use_future);
        ctx.run_for(10s);
        REQUIRE(waited.wait_for(10s) == std::future_status::ready);
        REQUIRE(killed.wait_for(10s) == std::future_status::ready);
        CHECK_THROWS_AS(waited.get(), std::system_error);
        try {
            killed.get();
            FAIL("no exception");
        } catch (const std::system_error& e) {
            CHECK(e.code() == errc::not_a_parent);
        }
    }
}
