// Fills a buffer with random bytes nobody else ever sees, forks to the
// endpoint, and reports from both sides a checksum of the buffer, its pid, its
// pid namespace and its host's addresses. Only a child whose memory is the
// parent's can report the parent's checksum. CAPTURE is how the child's image
// is taken: "automatic" (a snapshot, for this single-threaded program) or
// "caller" (this process itself).
//
//   memory_probe HOST:PORT MIB [automatic|caller]
#include "probe_util.hpp"
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <cinttypes>
#include <cstdio>
#include <random>

asio::awaitable<int> probe_main(asio::io_context& ctx, std::string endpoint, std::size_t mib, rfork::capture how) {
    std::vector<std::uint64_t> buffer(mib * (1u << 20) / 8);
    std::mt19937_64 random(std::random_device{}());
    for (auto& word : buffer) word = random();
    std::printf("before pid=%d sum=%016" PRIx64 "\n", ::getpid(), probe::checksum(buffer));
    std::fflush(stdout);

    rfork::fork_options options;
    options.how = how;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, options);
    std::printf("%s id=%s host=%s child_pid=%d pid=%d pidns=%s addrs=%s sum=%016" PRIx64 "\n",
                r.is_child() ? "child" : "parent", r.child().id.c_str(), r.child().host.c_str(), r.child().pid,
                ::getpid(), probe::pid_namespace().c_str(), probe::addresses().c_str(), probe::checksum(buffer));
    std::fflush(stdout);
    co_return 0;
}

int main(int argc, char** argv) {
    std::string_view mode = argc == 4 ? argv[3] : "automatic";
    if (argc < 3 || argc > 4 || (mode != "automatic" && mode != "caller")) {
        std::fprintf(stderr, "usage: memory_probe HOST:PORT MIB [automatic|caller]\n");
        return 2;
    }
    auto how = mode == "caller" ? rfork::capture::caller : rfork::capture::automatic;
    return probe::run_main("memory_probe",
                           [&](asio::io_context& ctx) { return probe_main(ctx, argv[1], std::stoul(argv[2]), how); });
}
