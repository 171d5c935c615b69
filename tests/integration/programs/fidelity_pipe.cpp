// Writes "pending-data" into a pipe whose two ends it holds, reads none of
// it, and forks. The child reads its copy of the pipe; the parent reads its
// own once the child has ended (so the child's read cannot have taken it).
// Each side then checks that nothing more is in its pipe.
//
//   fidelity_pipe HOST:PORT
//
// Lines: "SIDE pipe=DATA rest=empty|more:BYTES|error:WHAT", "parent waited status=N".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr int bound_ms = 10000;

std::string read_pipe(int fd, const char* side) {
    std::string data;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, bound_ms) <= 0) {
        data = "<nothing-within-bound>";
    } else {
        char buffer[256];
        auto n = ::read(fd, buffer, sizeof buffer);
        data = n < 0 ? std::string("<error:") + std::strerror(errno) + ">" : std::string(buffer, static_cast<std::size_t>(n));
    }
    // The write end is still open here, so an empty pipe reads EAGAIN.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    char more[256];
    auto m = ::read(fd, more, sizeof more);
    std::string rest = m < 0 && errno == EAGAIN ? "empty"
                       : m < 0                  ? std::string("error:") + std::strerror(errno)
                       : m == 0                 ? "eof"
                                                : "more:" + std::string(more, static_cast<std::size_t>(m));
    return std::string(side) + " pipe=" + data + " rest=" + rest;
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) co_return 3;
    const std::string pending = "pending-data";
    if (::write(p[1], pending.data(), pending.size()) != static_cast<ssize_t>(pending.size())) co_return 3;

    auto forked = co_await probe::fork_or_report(ctx, endpoint);
    if (!forked) co_return 1;
    rfork::fork_result& r = *forked;
    if (r.is_child()) {
        std::string report = read_pipe(p[0], "child");
        std::printf("%s\n", report.c_str());
        std::fflush(stdout);
        co_return 0;
    }
    co_await probe::wait_and_report(r);
    std::string report = read_pipe(p[0], "parent");
    std::printf("%s\n", report.c_str());
    std::fflush(stdout);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: fidelity_pipe HOST:PORT\n");
        return 2;
    }
    return probe::run_main("fidelity_pipe", [&](asio::io_context& ctx) { return run(ctx, argv[1]); });
}
