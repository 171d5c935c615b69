// The classic demo: fork onto another machine, then both sides count to ten.
// The child's lines appear here too, as after a local fork(); the parent then
// waits for the child and reports how it ended.
//
//   silly HOST:PORT
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <cstdio>
#include <exception>
#include <string>

asio::awaitable<void> silly(asio::io_context& ctx, std::string endpoint) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    const char* who = r.is_child() ? "child" : "parent";
    if (r.is_parent())
        std::printf("parent: forked child %s on %s (pid %d)\n", r.child().id.c_str(), r.child().host.c_str(),
                    r.child().pid);
    for (int i = 0; i < 10; ++i) std::printf("%s %d\n", who, i);
    std::fflush(stdout);
    if (r.is_parent()) {
        int status = co_await r.wait();
        std::printf("parent: child %s exited with status %d\n", r.child().id.c_str(), status);
    }
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
        return 2;
    }
    asio::io_context ctx;
    std::exception_ptr failure;
    asio::co_spawn(ctx, silly(ctx, argv[1]), [&](std::exception_ptr e) { failure = e; });
    ctx.run();
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "silly: %s\n", e.what());
            return 1;
        }
    }
}
