// Starting a CRIU that speaks the page-server conversation on a socket of
// the agent's (--ps-socket): a lazy dump, which serves the pages it kept, or
// `criu lazy-pages`, which asks for them. The agent holds the other end
// (send/page_stream.hpp, receive/lazy_page_server.hpp).
#pragma once

#include "common/process.hpp"
#include "common/run_as.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

// The fds CRIU gets for the page-server conversation and for saying "ready".
inline constexpr int criu_page_socket_fd = 3, criu_ready_fd = 4;

// Starts `command`, a CRIU command line that talks on criu_page_socket_fd
// and says ready on criu_ready_fd, with `fds` besides (its workspace's), as
// `as` when given and in the namespaces of `join` (see spawn), and waits
// until it is ready or has ended. `criu` is the process either way (the
// caller's, which awaits this at once); the result is the agent's end of the
// conversation, or no fd if CRIU ended first.
asio::awaitable<unique_fd> start_page_criu(asio::any_io_executor ex, std::vector<std::string> command,
                                           std::vector<fd_mapping> fds, std::optional<run_as> as,
                                           child_process& criu, int join = -1);

}  // namespace rfork::agent
