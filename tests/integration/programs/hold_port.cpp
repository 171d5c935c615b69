// Holds a TCP port without being an rfork agent: listens on 0.0.0.0:PORT,
// writes "listening" to STATUS_FILE, then waits to be killed (at most 120 s).
//
//   hold_port PORT STATUS_FILE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: hold_port PORT STATUS_FILE\n");
        return 2;
    }
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[1])));
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 || ::listen(listener, 8) != 0) {
        std::fprintf(stderr, "hold_port: cannot listen on port %s: %s\n", argv[1], std::strerror(errno));
        return 1;
    }
    int status = ::open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (status < 0 || ::write(status, "listening\n", 10) != 10) return 1;
    ::close(status);
    ::poll(nullptr, 0, 120 * 1000);
    return 0;
}
