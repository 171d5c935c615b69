// Listens on 0.0.0.0:PORT, then forks: both sides keep the listening socket
// and each accepts one connection on its own host. Each side appends
// "SIDE listening" to STATUS_FILE once it can accept (the parent after the
// fork returned, i.e. once the child runs), reads the client's line, answers
// with a greeting and reports the connection; the parent then waits for the
// child.
//
//   fidelity_listener HOST:PORT PORT STATUS_FILE
//
// Lines: "SIDE accepted local=IP:PORT peer=IP got=LINE" (or "SIDE error=..."),
// "parent waited status=N". The greeting is "greeting side=SIDE addrs=ADDRS".
#include "probe_util.hpp"
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr int bound_ms = 30000;

std::string address_text(const sockaddr_in& a) {
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    return text;
}

void append_line(const std::string& path, const std::string& line) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    std::string text = line + "\n";
    [[maybe_unused]] auto n = ::write(fd, text.data(), text.size());
    ::close(fd);
}

// Reads up to a newline (not included), bounded; empty on EOF, error or timeout.
std::string read_line(int fd) {
    std::string line;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, bound_ms) <= 0) return line;
        char c;
        if (::read(fd, &c, 1) != 1 || c == '\n') return line;
        line += c;
    }
}

// Accepts one connection within the bound and serves it. Returns the report line.
std::string serve_one(int listener, const char* side) {
    pollfd p{listener, POLLIN, 0};
    int ready = ::poll(&p, 1, bound_ms);
    if (ready <= 0) return std::string(side) + " error=" + (ready == 0 ? "no-connection-within-bound" : std::strerror(errno));
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
    if (fd < 0) return std::string(side) + " error=accept:" + std::strerror(errno);
    sockaddr_in local{};
    socklen_t local_len = sizeof local;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len);
    std::string got = read_line(fd);
    std::string greeting = std::string("greeting side=") + side + " addrs=" + probe::addresses() + "\n";
    auto sent = ::send(fd, greeting.data(), greeting.size(), MSG_NOSIGNAL);
    ::close(fd);
    return std::string(side) + " accepted local=" + address_text(local) + ":" + std::to_string(ntohs(local.sin_port)) +
           " peer=" + address_text(peer) + " got=" + got + " sent=" + std::to_string(sent);
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint, int port, std::string status_file) {
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_port = htons(static_cast<std::uint16_t>(port));
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 || ::listen(listener, 8) != 0) {
        std::fprintf(stderr, "fidelity_listener: cannot listen on port %d: %s\n", port, std::strerror(errno));
        co_return 3;
    }

    auto forked = co_await probe::fork_or_report(ctx, endpoint);
    if (!forked) co_return 1;
    rfork::fork_result& r = *forked;
    const char* side = r.is_child() ? "child" : "parent";
    append_line(status_file, std::string(side) + " listening");
    std::string report = serve_one(listener, side);
    std::printf("%s\n", report.c_str());
    std::fflush(stdout);
    ::close(listener);
    if (r.is_parent()) {
        co_await probe::wait_and_report(r);
    }
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: fidelity_listener HOST:PORT PORT STATUS_FILE\n");
        return 2;
    }
    return probe::run_main("fidelity_listener", [&](asio::io_context& ctx) { return run(ctx, argv[1], std::stoi(argv[2]), argv[3]); });
}
