// What /proc tells about a process, as the library and the agent both need it:
// whether it can be snapshotted by a local fork(), and what CRIU must be told.
#pragma once

#include <rfork/detail/pidfd.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>

namespace rfork::detail {

inline std::string proc_path(int pid, const char* what) {
    return "/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/" + what;
}

// The inodes of the sockets the process (0: this one) has open.
inline std::set<std::uint64_t> socket_inodes(int pid) {
    std::set<std::uint64_t> sockets;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(proc_path(pid, "fd"), ec)) {
        auto target = std::filesystem::read_symlink(entry.path(), ec).string();
        if (target.starts_with("socket:[")) sockets.insert(std::strtoull(target.c_str() + 8, nullptr, 10));
    }
    return sockets;
}

// Whether the socket is a TCP connection: not a listener, not closed.
inline bool is_tcp_connection(int fd) {
    auto option = [fd](int level, int name) {
        int value = -1;
        socklen_t length = sizeof value;
        return ::getsockopt(fd, level, name, &value, &length) == 0 ? value : -1;
    };
    int domain = option(SOL_SOCKET, SO_DOMAIN);
    if ((domain != AF_INET && domain != AF_INET6) || option(SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP ||
        option(SOL_SOCKET, SO_ACCEPTCONN) != 0)
        return false;
    tcp_info info{};
    socklen_t length = sizeof info;
    return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 || info.tcpi_state != TCP_CLOSE;
}

// Whether the process (0: this one) holds a TCP connection: CRIU then needs
// --tcp-established, which works on the socket itself, shared or not.
// Another process's sockets are asked through copies (pidfd_getfd); reading
// /proc/PID/net/tcp instead walks every TCP socket of the host, ~2 ms each.
inline bool has_tcp_connections(int pid) {
    int pidfd = pid == 0 ? -1 : open_pidfd(pid);
    if (pid != 0 && pidfd < 0) return true;  // cannot tell: CRIU's TCP options are the safe side
    bool found = false;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(proc_path(pid, "fd"), ec)) {
        if (!std::filesystem::read_symlink(entry.path(), ec).string().starts_with("socket:[")) continue;
        int fd = std::atoi(entry.path().filename().c_str());
        int copy = pid == 0 ? fd : static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0));
        if (copy < 0) {
            found = errno != EBADF;  // closed meanwhile: not a connection; anything else: cannot tell
        } else {
            found = is_tcp_connection(copy);
            if (copy != fd) ::close(copy);
        }
        if (found) break;
    }
    if (pidfd >= 0) ::close(pidfd);
    return found;
}

// A "Name: numbers" field of a /proc file such as /proc/PID/status or
// /proc/self/fdinfo/FD; its last number when it has several (NSpid, NSsid:
// the last is the one in the process's own pid namespace).
inline long proc_field(const std::string& file, const std::string& name, long missing = -1) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with(name + ":")) continue;
        std::istringstream fields(line.substr(name.size() + 1));
        long value = missing;
        for (long v; fields >> v;) value = v;
        return value;
    }
    return missing;
}

// A field of /proc/PID/status (0: this process), e.g. "Threads" or "PPid".
inline long status_field(int pid, const std::string& name, long missing = -1) {
    return proc_field(proc_path(pid, "status"), name, missing);
}

}  // namespace rfork::detail
