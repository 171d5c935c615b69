// The main() of a test program: runs its coroutine on an io_context and turns
// an exception into a message on stderr and exit code 1.
#pragma once

#include <asio.hpp>

#include <cstdio>
#include <exception>

namespace probe {

// `body(ctx)` returns asio::awaitable<int>: the program's exit code.
template <typename Body>
int run_main(const char* name, Body body) {
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, body(ctx), asio::use_future);
    ctx.run();
    try {
        return done.get();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", name, e.what());
        return 1;
    }
}

}  // namespace probe

#include <rfork/rfork.hpp>

#include <optional>
#include <string_view>

namespace probe {

// Forks (non-throwing form); on failure prints "error: fork failed: ..." and
// gives nothing, so the program can end with its own code.
inline asio::awaitable<std::optional<rfork::fork_result>> fork_or_report(asio::io_context& ctx,
                                                                         std::string_view endpoint) {
    std::error_code ec;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, ec);
    if (!ec) co_return r;
    std::printf("error: fork failed: %s\n", r.error_message().c_str());
    std::fflush(stdout);
    co_return std::nullopt;
}

// In the parent: waits for the child and prints "parent waited status=N".
inline asio::awaitable<void> wait_and_report(const rfork::fork_result& r) {
    int status = co_await r.wait();
    std::printf("parent waited status=%d\n", status);
    std::fflush(stdout);
}

}  // namespace probe
