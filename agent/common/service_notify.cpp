#include "common/service_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace rfork::agent {

std::string notify_service_manager(const std::string& state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path) return {};
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::size_t length = std::strlen(path);
    // A path, or "@name" for the abstract namespace (a leading NUL byte).
    if ((path[0] != '/' && path[0] != '@') || length >= sizeof address.sun_path)
        return std::string("NOTIFY_SOCKET is not a socket path: ") + path;
    std::memcpy(address.sun_path, path, length);
    if (path[0] == '@') address.sun_path[0] = '\0';
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::string("cannot make a socket for NOTIFY_SOCKET: ") + std::strerror(errno);
    auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
    ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&address), size);
    int error = errno;
    ::close(fd);
    if (sent != static_cast<ssize_t>(state.size()))
        return std::string("cannot tell the service manager (NOTIFY_SOCKET ") + path + "): " + std::strerror(error);
    return {};
}

}  // namespace rfork::agent
