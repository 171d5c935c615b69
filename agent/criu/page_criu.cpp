#include "criu/page_criu.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <system_error>

namespace rfork::agent {

asio::awaitable<unique_fd> start_page_criu(asio::any_io_executor ex, std::vector<std::string> command,
                                           std::vector<fd_mapping> fds, std::optional<run_as> as,
                                           child_process& criu, int join) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    unique_fd criu_end(pair[0]), agent_end(pair[1]);
    auto ready = make_pipe();
    fds.push_back({criu_end.get(), criu_page_socket_fd});
    fds.push_back({ready.write.get(), criu_ready_fd});
    criu = spawn(command, fds, 0, as ? &*as : nullptr, join);
    criu_end.reset(), ready.write.reset();  // CRIU's now: its end, or its exit, ends the read below
    asio::posix::stream_descriptor ready_stream(ex, ready.read.release());
    char byte = 1;
    auto [ec, n] = co_await asio::async_read(ready_stream, asio::buffer(&byte, 1), detail::as_tuple_awaitable);
    if (n != 1) co_return unique_fd();
    co_return agent_end;
}

}  // namespace rfork::agent
