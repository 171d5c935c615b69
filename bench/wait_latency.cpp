// Times wait(): from the child's last instruction before _exit to the
// parent's wait() returning. Both hosts of a test setup share one clock.
//
//   wait_latency HOST:PORT     prints "exit_ns=.." (child) and "waited_ns=.." (parent)
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace {

long long now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

asio::awaitable<void> run(asio::io_context& ctx, std::string endpoint) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        std::printf("exit_ns=%lld\n", now_ns());
        std::fflush(stdout);
        ::_exit(0);
    }
    int status = co_await r.wait();
    std::printf("waited_ns=%lld status=%d\n", now_ns(), status);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: wait_latency HOST:PORT\n");
        return 2;
    }
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, run(ctx, argv[1]), asio::use_future);
    ctx.run();
    try {
        done.get();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "wait_latency: %s\n", e.what());
        return 1;
    }
}
