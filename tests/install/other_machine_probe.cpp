// Forks onto HOST:PORT. The child leaves PROOF (a path) on the machine it
// runs on, holding its pid there, and exits 0; the parent waits for it and
// prints "parent waited status=N". Linked statically, so that the other
// machine needs only this one file, at the same path.
//
//   other_machine_probe HOST:PORT PROOF
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>

asio::awaitable<int> probe(asio::io_context& ctx, std::string endpoint, std::string proof) {
    std::error_code ec;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, ec);
    if (ec) {
        std::printf("error: fork failed: %s\n", r.error_message().c_str());
        co_return 1;
    }
    if (r.is_child()) {
        std::FILE* f = std::fopen(proof.c_str(), "wx");
        if (!f) co_return 3;
        std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
        co_return std::fclose(f) == 0 ? 0 : 4;
    }
    int status = co_await r.wait();
    std::printf("parent waited status=%d\n", status);
    co_return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: other_machine_probe HOST:PORT PROOF\n");
        return 2;
    }
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, probe(ctx, argv[1], argv[2]), asio::use_future);
    ctx.run();
    int code = done.get();
    std::fflush(stdout);
    return code;
}
