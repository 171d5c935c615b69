// Holds an established TCP connection (to an echo server) across a fork. The
// child reports what its copy of the connection does: its TCP state, a read
// and a write. The parent exchanges a line with the server right after the
// fork and again once the child has ended.
//
//   fidelity_tcp HOST:PORT SERVER_IP SERVER_PORT
//
// Lines: "before echo=before", "child state=N read=eof|error:WHAT|data:BYTES|timeout
// write=ok:N|error:WHAT", "parent after-fork echo=LINE", "parent waited status=N",
// "parent after-child echo=LINE".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr int bound_ms = 10000;

// Sends `text` and a newline and reads the line that comes back, bounded.
std::string exchange(int fd, const std::string& text) {
    std::string out = text + "\n";
    if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size()))
        return std::string("send-error:") + std::strerror(errno);
    std::string line;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, bound_ms) <= 0) return "timeout:" + line;
        char c;
        auto n = ::read(fd, &c, 1);
        if (n < 0) return std::string("read-error:") + std::strerror(errno);
        if (n == 0) return "eof:" + line;
        if (c == '\n') return line;
        line += c;
    }
}

std::string child_view(int fd) {
    tcp_info info{};
    socklen_t len = sizeof info;
    int state = ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 ? info.tcpi_state : -1;

    std::string read_result;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, bound_ms) <= 0) {
        read_result = "timeout";
    } else {
        char buffer[256];
        auto n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (n == 0) read_result = "eof";
        else if (n < 0) read_result = std::string("error:") + std::strerror(errno);
        else read_result = "data:" + std::string(buffer, static_cast<std::size_t>(n));
    }

    std::string text = "child-write\n";
    auto sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    std::string write_result =
        sent < 0 ? std::string("error:") + std::strerror(errno) : "ok:" + std::to_string(sent);
    for (auto& c : read_result)
        if (c == ' ' || c == '\n') c = '_';
    for (auto& c : write_result)
        if (c == ' ') c = '_';
    return "child state=" + std::to_string(state) + " read=" + read_result + " write=" + write_result;
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint, std::string server_ip, int server_port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(server_port));
    ::inet_pton(AF_INET, server_ip.c_str(), &to.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
        std::fprintf(stderr, "fidelity_tcp: cannot connect to %s:%d: %s\n", server_ip.c_str(), server_port,
                     std::strerror(errno));
        co_return 3;
    }
    std::string echoed = exchange(fd, "before");
    std::printf("before echo=%s\n", echoed.c_str());
    std::fflush(stdout);

    auto forked = co_await probe::fork_or_report(ctx, endpoint);
    if (!forked) co_return 1;
    rfork::fork_result& r = *forked;
    if (r.is_child()) {
        std::string view = child_view(fd);
        std::printf("%s\n", view.c_str());
        std::fflush(stdout);
        co_return 0;
    }
    echoed = exchange(fd, "parent-after-fork");
    std::printf("parent after-fork echo=%s\n", echoed.c_str());
    std::fflush(stdout);
    co_await probe::wait_and_report(r);
    echoed = exchange(fd, "parent-after-child");
    std::printf("parent after-child echo=%s\n", echoed.c_str());
    std::fflush(stdout);
    ::close(fd);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: fidelity_tcp HOST:PORT SERVER_IP SERVER_PORT\n");
        return 2;
    }
    return probe::run_main("fidelity_tcp", [&](asio::io_context& ctx) { return run(ctx, argv[1], argv[2], std::stoi(argv[3])); });
}
