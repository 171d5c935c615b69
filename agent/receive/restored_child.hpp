// A child restored on this host, as the parts that restore it (restore.hpp),
// fetch its memory (lazy_pages.hpp) and serve it (child_life.hpp) share it.
#pragma once

#include "common/agent_state.hpp"
#include "common/process.hpp"
#include "receive/lazy_page_server.hpp"
#include "receive/child_cgroup.hpp"

#include <rfork/protocol.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/streambuf.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

struct restored_child {
    explicit restored_child(const asio::any_io_executor& ex) : status(ex) {}

    struct output {
        std::shared_ptr<asio::posix::stream_descriptor> stream;
        protocol::output_stream which;
        bool terminal;  // a pty master: its end reads as EIO
    };

    std::shared_ptr<hosted_child> record;
    child_process init;
    asio::posix::stream_descriptor status;  // lines from the namespace init
    asio::streambuf status_buffer;
    std::vector<output> outputs;
    std::shared_ptr<asio::posix::stream_descriptor> input;  // the child's stdin: a pipe, or a pty master
    bool input_is_terminal = false;
    std::shared_ptr<lazy_page_server> pages;  // with lazy pages: answers `criu lazy-pages`
    child_process lazy_daemon;          // and that daemon
    bool running = false;               // restored: the init's child is the child, no longer CRIU
    std::optional<child_cgroup> cgroup; // every process of the child, from its init on
    child_slot slot;                    // its place among --max-children
};

// Reads one status line from the child's namespace init; empty at its end.
asio::awaitable<std::string> read_status_line(std::shared_ptr<restored_child> child);

// Ends the child's input: a pipe is closed, a terminal gets its end-of-file character.
void end_input(restored_child& child);

// Kills the child's namespace init, and with it the whole pid namespace.
void kill_child(restored_child& child);

// Removes the child's cgroup once its pid namespace has ended.
asio::awaitable<void> remove_cgroup(std::shared_ptr<restored_child> child);

}  // namespace rfork::agent
