// Forks to the first endpoint; the child forks again to the second. Every
// generation reports where it runs and a checksum of memory filled before the
// first fork, and each parent waits for its child.
//
//   chain_probe HOST:PORT HOST:PORT [MIB]   (default 8 MiB of memory)
#include "probe_util.hpp"
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <cinttypes>
#include <cstdio>
#include <random>

asio::awaitable<int> chain(asio::io_context& ctx, std::string first, std::string second, std::size_t mib) {
    std::vector<std::uint64_t> buffer(mib << 17);  // 8-byte words
    std::mt19937_64 random(std::random_device{}());
    for (auto& word : buffer) word = random();
    const char* generation = "origin";
    rfork::fork_result r = co_await rfork::fork_remote(ctx, first);
    if (r.is_child()) {
        generation = "child";
        rfork::fork_result again = co_await rfork::fork_remote(ctx, second);
        if (again.is_child()) generation = "grandchild";
        else {
            int status = co_await again.wait();
            std::printf("child waited grandchild=%s grandchild_pid=%d status=%d\n", again.child().id.c_str(),
                        again.child().pid, status);
        }
    } else {
        int status = co_await r.wait();
        std::printf("origin waited child=%s child_pid=%d status=%d\n", r.child().id.c_str(), r.child().pid, status);
    }
    std::printf("%s pid=%d pidns=%s addrs=%s sum=%016" PRIx64 "\n", generation, ::getpid(),
                probe::pid_namespace().c_str(), probe::addresses().c_str(), probe::checksum(buffer));
    std::fflush(stdout);
    co_return 0;
}

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        std::fprintf(stderr, "usage: chain_probe HOST:PORT HOST:PORT [MIB]\n");
        return 2;
    }
    std::size_t mib = argc == 4 ? std::stoul(argv[3]) : 8;
    return probe::run_main("chain_probe",
                           [&](asio::io_context& ctx) { return chain(ctx, argv[1], argv[2], mib); });
}
