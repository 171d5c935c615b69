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
