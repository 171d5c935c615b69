// Forks COUNT times in a row to the endpoint. Each child reports itself and
// exits at once with code (N % 250) + 1; the parent waits for it before the
// next fork and reports the status it got.
//
//   load_loop HOST:PORT COUNT
//
// Lines: "child n=N id=ID", "parent n=N id=ID status=S", and at the end
// "done count=COUNT ms=MILLISECONDS".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <chrono>
#include <cstdio>
#include <string>

namespace {

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint, int count) {
    auto start = std::chrono::steady_clock::now();
    for (int n = 0; n < count; ++n) {
        std::error_code ec;
        rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, ec);
        if (ec) {
            std::printf("error n=%d: fork failed: %s\n", n, r.error_message().c_str());
            std::fflush(stdout);
            co_return 1;
        }
        if (r.is_child()) {
            std::printf("child n=%d id=%s\n", n, r.child().id.c_str());
            std::fflush(stdout);
            co_return n % 250 + 1;
        }
        int status = co_await r.wait();
        std::printf("parent n=%d id=%s status=%d\n", n, r.child().id.c_str(), status);
        std::fflush(stdout);
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    std::printf("done count=%d ms=%lld\n", count, static_cast<long long>(ms.count()));
    std::fflush(stdout);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: load_loop HOST:PORT COUNT\n");
        return 2;
    }
    return probe::run_main("load_loop", [&](asio::io_context& ctx) { return run(ctx, argv[1], std::stoi(argv[2])); });
}
