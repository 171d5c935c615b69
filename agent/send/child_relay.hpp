// A forked child's life, relayed between its parent here and its host: the
// child's output to the parent's stdout and stderr, the parent's stdin and
// signals to the child, and its end to whoever waits for it.
#pragma once

#include "common/agent_state.hpp"
#include "common/one_shot_event.hpp"
#include "common/process.hpp"
#include "criu/criu_workspace.hpp"
#include "local/parent_stdio.hpp"
#include "peer/peer_connection.hpp"
#include "send/page_stream.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <memory>
#include <optional>

namespace rfork::agent {

// The connection to the child's host, kept for the child's life: its output
// and exit come back on it, signals and input go out on it.
struct child_relay {
    explicit child_relay(const asio::any_io_executor& ex) : peer(std::make_shared<peer_connection>(ex)) {}
    std::shared_ptr<peer_connection> peer;
    std::optional<output_sink> out, err;
    std::optional<input_source> in;
    std::shared_ptr<page_stream> pages;          // with lazy pages: the memory, from the dump's page server
    std::shared_ptr<one_shot_event> pages_sent;  // and when it has ended
};

// Starts waiting for a lazy dump (`dump`, CRIU serving pid's pages) to end:
// once the child's host has all the pages, or the connection is gone. Its
// job directory goes then, and `relay->pages_sent` is set, on every exit.
void watch_lazy_dump(agent_state& agent, const std::shared_ptr<child_relay>& relay, child_process dump, job_dir job,
                     std::shared_ptr<criu_workspace> workspace, int pid);

// Starts streaming the dump's pages to the child's host.
void start_page_pump(const std::shared_ptr<child_relay>& relay);

// Ends a lazy dump's page serving, if there is one, and waits until its CRIU
// has gone: nothing of a fork stays once its parent hears the end.
asio::awaitable<void> end_page_serving(std::shared_ptr<child_relay> relay);

// Records `child` and relays its life until it ends; its record stays while
// its parent (`parent_pidfd`) may still ask for it. Whatever ends the relay,
// an error included, the child is marked ended and its waiters released.
void start_child_relay(agent_state& agent, std::shared_ptr<child_relay> relay, std::shared_ptr<forked_child> child,
                       unique_fd parent_pidfd);

}  // namespace rfork::agent
