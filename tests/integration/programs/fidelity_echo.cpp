// An echo server for the fidelity tests: listens on 0.0.0.0:PORT, writes
// "ready" to READY_FILE, accepts one connection and sends every line back
// until the peer closes, everything bounded. It prints every line it got, so
// a test sees exactly who wrote to the connection.
//
//   fidelity_echo PORT READY_FILE
//
// Lines: "echo peer=IP", "echo got=LINE" for each line, then "echo end=eof",
// "echo end=error:WHAT" or "echo end=timeout".
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

constexpr int bound_ms = 60000;

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: fidelity_echo PORT READY_FILE\n");
        return 2;
    }
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_port = htons(static_cast<std::uint16_t>(std::stoi(argv[1])));
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 || ::listen(listener, 4) != 0) {
        std::fprintf(stderr, "fidelity_echo: cannot listen: %s\n", std::strerror(errno));
        return 3;
    }
    int ready = ::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    [[maybe_unused]] auto w = ::write(ready, "ready\n", 6);
    ::close(ready);

    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, bound_ms) <= 0) {
        std::printf("echo end=no-connection\n");
        return 1;
    }
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
    char peer_text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &peer.sin_addr, peer_text, sizeof peer_text);
    std::printf("echo peer=%s\n", peer_text);
    std::fflush(stdout);

    std::string line;
    for (;;) {
        pollfd in{fd, POLLIN, 0};
        if (::poll(&in, 1, bound_ms) <= 0) {
            std::printf("echo end=timeout\n");
            break;
        }
        char buffer[4096];
        auto n = ::read(fd, buffer, sizeof buffer);
        if (n == 0) {
            std::printf("echo end=eof\n");
            break;
        }
        if (n < 0) {
            std::printf("echo end=error:%s\n", std::strerror(errno));
            break;
        }
        for (ssize_t i = 0; i < n; ++i) {
            if (buffer[i] != '\n') {
                line += buffer[i];
                continue;
            }
            std::printf("echo got=%s\n", line.c_str());
            std::fflush(stdout);
            line += '\n';
            ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
            line.clear();
        }
    }
    if (!line.empty()) std::printf("echo partial=%s\n", line.c_str());
    std::fflush(stdout);
    ::close(fd);
    return 0;
}
