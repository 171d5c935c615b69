#include "local/local.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/watchdog.hpp"
#include "local/control.hpp"
#include "send/serve_fork.hpp"

#include <rfork/detail/pidfd.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace rfork::agent {

namespace {

constexpr std::size_t max_fds = protocol::fork_request::max_fds;

struct first_message {
    protocol::stream_decoder::frame frame;
    std::vector<unique_fd> fds;
    std::optional<failure> problem;
};

// Receives some bytes and any fds attached to them.
ssize_t receive(int socket, std::span<unsigned char> buffer, std::vector<unique_fd>& fds) {
    char control[CMSG_SPACE(sizeof(int) * max_fds)] = {};
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    for (auto* c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);  // owned at once, so extra ones are closed too
        }
    }
    if (fds.size() > max_fds) fds.clear();
    return n;
}

// The handshake and first frame, with the fds that came along (recvmsg: a
// plain read would drop them). `program` is serve_local's, which awaits this at once.
asio::awaitable<first_message> read_first_message(local_socket& program) {
    first_message m;
    protocol::stream_decoder decoder(true, protocol::max_control_payload);
    std::array<unsigned char, 4096> buffer{};
    std::size_t total = 0;
    bool greeted = false;
    for (;;) {
        switch (decoder.next()) {
        case protocol::stream_decoder::result::handshake:
            greeted = true;
            if (decoder.peer().who != protocol::role::program) {
                m.problem = failure{errc::unexpected_role, "only programs may use the local socket"};
                co_return m;
            }
            continue;
        case protocol::stream_decoder::result::frame: m.frame = decoder.last_frame(); co_return m;
        case protocol::stream_decoder::result::error: {
            auto ec = decoder.error();
            m.problem = failure{ec, ec == errc::unsupported_version
                                        ? fmt::format("the program speaks protocol version {}, this agent {}",
                                                      decoder.peer().version, protocol::protocol_version)
                                        : (greeted ? "bad request: " : "bad handshake: ") + ec.message()};
            co_return m;
        }
        case protocol::stream_decoder::result::need_more: break;
        }
        auto [ec] = co_await program.async_wait(local_socket::wait_read, detail::as_tuple_awaitable);
        ssize_t n = ec ? -1 : receive(program.native_handle(), buffer, m.fds);
        if (n < 0 && (errno == EAGAIN || errno == EINTR) && !ec) continue;
        if (n <= 0) {
            std::error_code end = n == 0 && total == 0 ? std::error_code(asio::error::eof) : errc::truncated;
            m.problem = failure{end, "the program closed the connection mid-request"};
            co_return m;
        }
        total += static_cast<std::size_t>(n);
        decoder.feed(std::span(buffer.data(), static_cast<std::size_t>(n)));
    }
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; newer than Debian 12's headers
#endif

// A pidfd of the process that connected, as the kernel recorded it then: a
// pid alone may name another process by the time it is used. Kernels before
// 6.5 lack SO_PEERPIDFD; the pid is then opened now, and the request's own
// checks (the socket must be that process's) tell a reused pid.
unique_fd peer_pidfd(int socket, pid_t pid) {
    int fd = -1;
    socklen_t len = sizeof fd;
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        return unique_fd(fd);
    }
    return unique_fd(detail::open_pidfd(pid));
}

template <typename Message>
std::optional<Message> decode_as(const protocol::stream_decoder::frame& frame) {
    Message m;
    if (frame.type != Message::type || protocol::decode(frame.payload, m)) return std::nullopt;
    return m;
}

}  // namespace

asio::awaitable<void> answer_failure(local_socket& program, const failure& f) {
    protocol::error_message e{f.code, f.text};
    co_await answer(program, e);
}

asio::awaitable<void> serve_local(agent_state& agent, local_socket program) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(program.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) co_return;
    auto caller = peer_pidfd(program.native_handle(), cred.pid);
    if (!caller) co_return;  // gone already

    auto& users = agent.opts.local_users;
    if (cred.uid != 0 && std::find(users.begin(), users.end(), cred.uid) == users.end()) {
        failure refused{errc::not_permitted, fmt::format("uid {} may not use this agent (see --local-users)", cred.uid)};
        emit_event("request_refused", {{"pid", cred.pid}, {"code", refused.code.value()}, {"text", refused.text}});
        log("request from pid {} refused: {}", cred.pid, refused.text);
        co_await answer_failure(program, refused);
        co_return;
    }
    watchdog guard(program, agent.opts.limits.handshake_timeout);
    auto first = co_await read_first_message(program);
    guard.stop();
    if (guard.fired())
        first.problem = failure{errc::timed_out, fmt::format("no whole request within {} s (--handshake-timeout)",
                                                             agent.opts.limits.handshake_timeout.count())};
    if (first.problem) {
        if (first.problem->code == asio::error::eof) co_return;  // connected and left
        emit_event("request_refused",
                   {{"pid", cred.pid}, {"code", first.problem->code.value()}, {"text", first.problem->text}});
        log("request from pid {} refused: {}", cred.pid, first.problem->text);
        co_await answer_failure(program, *first.problem);
        co_return;
    }
    switch (first.frame.type) {
    case protocol::message_type::fork_request:
        if (auto request = decode_as<protocol::fork_request>(first.frame)) {
            co_await serve_fork(agent, std::move(program), cred, std::move(caller), std::move(*request),
                                 std::move(first.fds));
            co_return;
        }
        break;
    case protocol::message_type::wait_request:
        if (auto request = decode_as<protocol::wait_request>(first.frame)) {
            co_await serve_wait(agent, std::move(program), cred, std::move(*request));
            co_return;
        }
        break;
    case protocol::message_type::kill_request:
        if (auto request = decode_as<protocol::kill_request>(first.frame)) {
            co_await serve_kill(agent, std::move(program), cred, std::move(*request));
            co_return;
        }
        break;
    case protocol::message_type::list_request: co_await serve_list(agent, std::move(program)); co_return;
    default: break;
    }
    failure bad{errc::malformed_message, "expected a fork, wait, kill or list request"};
    emit_event("request_refused", {{"pid", cred.pid}, {"code", bad.code.value()}, {"text", bad.text}});
    log("request from pid {} refused: {}", cred.pid, bad.text);
    co_await answer_failure(program, bad);
}

}  // namespace rfork::agent
