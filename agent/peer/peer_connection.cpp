#include "peer/peer_connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>

namespace rfork::agent {

void peer_connection::prepare_tcp(std::chrono::seconds idle) {
    std::error_code ignored;
    tcp().set_option(asio::ip::tcp::no_delay(true), ignored);
    detect_dead_peer(idle);
}

void peer_connection::detect_dead_peer(std::chrono::seconds limit) {
    int fd = tcp().native_handle();
    int on = 1;
    int idle = static_cast<int>(std::max<std::int64_t>(1, limit.count() / 2));
    int interval = std::max(1, idle / 3), count = 3;
    unsigned timeout_ms = static_cast<unsigned>(limit.count() * 1000);
    // Best effort, unchecked: without them a dead peer is only noticed later.
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
}

}  // namespace rfork::agent
