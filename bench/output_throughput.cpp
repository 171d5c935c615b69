// The child writes MIB MiB to its stdout, which its parent's agent relays to
// the parent's stdout; pipe the parent's stdout into pipe_meter to time it.
//
//   output_throughput HOST:PORT MIB | pipe_meter
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <unistd.h>

#include <cstdio>
#include <vector>

asio::awaitable<void> run(asio::io_context& ctx, std::string endpoint, std::size_t mib) {
    std::vector<char> block(1 << 20, 'x');
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        for (std::size_t i = 0; i < mib; ++i)
            for (std::size_t done = 0; done < block.size();) {
                auto n = ::write(1, block.data() + done, block.size() - done);
                if (n <= 0) co_return;
                done += static_cast<std::size_t>(n);
            }
        co_return;
    }
    co_await r.wait();
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: output_throughput HOST:PORT MIB\n");
        return 2;
    }
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, run(ctx, argv[1], std::stoul(argv[2])), asio::use_future);
    ctx.run();
    try {
        done.get();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "output_throughput: %s\n", e.what());
        return 1;
    }
}
