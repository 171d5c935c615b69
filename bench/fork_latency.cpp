// Times one fork_remote: from the call to the parent's return (the child is
// restored and running by then), and from the call to the child's first
// instruction after the fork point. Both hosts of a test setup share one clock.
//
//   fork_latency HOST:PORT [MIB]     prints "call_ns=.. parent_ns=.." (parent)
//                                    and "child_ns=.." (child, on the other host)
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <chrono>
#include <cstdio>
#include <vector>

namespace {

long long now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

asio::awaitable<void> measure(asio::io_context& ctx, std::string endpoint, std::size_t mib) {
    std::vector<unsigned char> memory(mib << 20);
    for (std::size_t i = 0; i < memory.size(); ++i) memory[i] = static_cast<unsigned char>(i * 131 + 7);
    long long call = now_ns();
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    long long back = now_ns();
    if (r.is_child()) {
        std::printf("child id=%s call_ns=%lld child_ns=%lld\n", r.child().id.c_str(), call, back);
    } else {
        std::printf("parent id=%s call_ns=%lld parent_ns=%lld\n", r.child().id.c_str(), call, back);
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: fork_latency HOST:PORT [MIB]\n");
        return 2;
    }
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, measure(ctx, argv[1], argc == 3 ? std::stoul(argv[2]) : 0), asio::use_future);
    ctx.run();
    try {
        done.get();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fork_latency: %s\n", e.what());
        return 1;
    }
}
