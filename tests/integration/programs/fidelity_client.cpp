// A TCP client for the fidelity tests: connects to IP:PORT, sends MESSAGE and
// a newline, and prints the one line it gets back, everything bounded.
//
//   fidelity_client IP PORT MESSAGE
//
// Prints "client got=LINE" and exits 0, or "client error=WHAT" and exits 1.
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

constexpr int bound_ms = 20000;

int fail(const std::string& what) {
    std::printf("client error=%s\n", what.c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: fidelity_client IP PORT MESSAGE\n");
        return 2;
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(std::stoi(argv[2])));
    if (::inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) return fail(std::string("bad-address:") + argv[1]);

    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)
        return fail(std::string("connect:") + std::strerror(errno));
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, bound_ms) <= 0) return fail("connect:no-answer-within-bound");
    int error = 0;
    socklen_t len = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error != 0) return fail(std::string("connect:") + std::strerror(error));

    std::string message = std::string(argv[3]) + "\n";
    if (::send(fd, message.data(), message.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(message.size()))
        return fail(std::string("send:") + std::strerror(errno));

    std::string line;
    for (;;) {
        pollfd in{fd, POLLIN, 0};
        if (::poll(&in, 1, bound_ms) <= 0) return fail("no-answer-within-bound got=" + line);
        char c;
        auto n = ::read(fd, &c, 1);
        if (n < 0 && errno == EAGAIN) continue;
        if (n < 0) return fail(std::string("read:") + std::strerror(errno) + " got=" + line);
        if (n == 0 || c == '\n') break;
        line += c;
    }
    ::close(fd);
    std::printf("client got=%s\n", line.c_str());
    return 0;
}
