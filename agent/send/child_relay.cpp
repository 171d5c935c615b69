#include "send/child_relay.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "criu/criu.hpp"

#include <rfork/detail/frame_io.hpp>

#include <fmt/core.h>

#include <utility>
#include <vector>

namespace rfork::agent {

namespace {

// Sets an event however the coroutine holding it ends.
struct set_on_exit {
    std::shared_ptr<one_shot_event> event;
    ~set_on_exit() { event->set(); }
};

// Marks a forked child ended, as lost, however its relay ends, unless it
// ended first: a relay that fails must not leave serve_wait waiting.
struct end_on_exit {
    std::shared_ptr<forked_child> child;
    ~end_on_exit() {
        if (child->finished()) return;
        child->lost = errc::internal_error;
        child->signal = nullptr;
        try {
            child->ended.set();  // wakes every waiter
        } catch (...) {  // never in practice; a destructor must not throw
        }
    }
};

asio::awaitable<void> finish_lazy_dump(child_process dump, job_dir job, std::shared_ptr<criu_workspace> workspace,
                                       int pid, std::shared_ptr<one_shot_event> ended, std::shared_ptr<page_stream> stream) {
    set_on_exit ends{ended};
    int status = co_await wait_for_exit(dump);
    ended->set();
    // Cut off mid-answer (the child ended before it had all its memory), CRIU fails: no news.
    if (status != 0 && !stream->cut_short()) {
        log_criu_failure(fmt::format("serving the pages of pid {} failed ({})", pid, describe_wait_status(status)),
                         workspace->work_fd(), dump_log);
    }
    job.remove();
}

// The parent's stdin, to the child, until it ends.
asio::awaitable<void> forward_input(std::shared_ptr<child_relay> relay) {
    std::vector<unsigned char> buffer(64 * 1024);
    for (;;) {
        auto n = co_await relay->in->read(buffer);
        auto frame = n == 0 ? protocol::encode_frame(protocol::message_type::child_input_end, {})
                            : protocol::encode_frame(protocol::message_type::child_input, std::span(buffer.data(), n));
        if (!co_await relay->peer->send(frame) || n == 0) co_return;
    }
}

asio::awaitable<void> send_signal(std::shared_ptr<child_relay> relay, int signal) {
    auto frame = protocol::encode(protocol::signal_child{static_cast<std::uint32_t>(signal)});
    co_await relay->peer->send(frame);
}

// How a child's relay ended: its exit status, or why it was lost.
struct child_end {
    std::optional<int> status;
    std::error_code lost;
};

// The child's frames until its exit: its output to the parent's stdout and
// stderr, and with lazy pages the receiver's page requests to the dump.
asio::awaitable<child_end> relay_frames(std::shared_ptr<child_relay> relay) {
    detail::received_frame frame;
    for (;;) {
        if (auto ec = co_await detail::read_frame(*relay->peer, frame)) co_return child_end{std::nullopt, ec};
        if (relay->pages && page_stream::carries(frame.type)) {
            relay->pages->take(frame);
            continue;
        }
        if (frame.type == protocol::message_type::child_output) {
            protocol::child_output output;
            if (protocol::decode(frame.payload, output)) co_return child_end{std::nullopt, errc::malformed_message};
            auto& sink = output.stream == protocol::output_stream::stdout_stream ? relay->out : relay->err;
            co_await sink->write(output.data);
            continue;
        }
        protocol::child_exit exit;
        if (frame.type != protocol::message_type::child_exit || protocol::decode(frame.payload, exit))
            co_return child_end{std::nullopt, errc::unexpected_message};
        co_return child_end{static_cast<int>(exit.status), {}};
    }
}

// Until the child ends, then its exit status to whoever waits. The record
// stays while the parent may ask. (`agent` outlives it: see local.hpp.)
asio::awaitable<void> relay_child(agent_state& agent, std::shared_ptr<child_relay> relay,
                                  std::shared_ptr<forked_child> child, unique_fd parent_pidfd) {
    end_on_exit ends{child};
    if (relay->in) {
        spawn(agent.io.get_executor(), forward_input(relay), fmt::format("forwarding stdin to child {}", child->id));
    } else {
        // Nothing to forward: the child's stdin ends now.
        auto end = protocol::encode_frame(protocol::message_type::child_input_end, {});
        co_await relay->peer->send(end);
    }
    // What ended it is told to waiters only once nothing of the fork is left.
    auto end = co_await relay_frames(relay);
    child->signal = nullptr;
    relay->peer->close();
    co_await end_page_serving(relay);
    relay->out.reset();  // the parent's stdout, stderr and stdin are not ours to keep
    relay->err.reset();
    if (relay->in) relay->in->close();  // ends forward_input, which owns the relay too
    child->status = end.status;
    child->lost = end.lost;
    child->ended.set();  // wakes every waiter
    if (child->status)
        emit_event("forked_child_ended", {{"id", child->id}, {"host", child->host}, {"parent_pid", child->parent_pid},
                                          {"status", *child->status}});
    else
        emit_event("forked_child_lost", {{"id", child->id}, {"host", child->host}, {"parent_pid", child->parent_pid},
                                         {"text", child->lost.message()}});
    if (child->status)
        log("child {} on {} (of pid {}) ended with status {}", child->id, child->host, child->parent_pid, *child->status);
    else
        log("lost child {} on {} (of pid {}): {}", child->id, child->host, child->parent_pid, child->lost.message());

    // Its parent may still wait for it; once the parent is gone, nobody can.
    // Only the small record stays meanwhile: the connection (TLS state and
    // all) goes now, as a parent may fork many children before it exits.
    relay.reset();
    co_await wait_readable(std::move(parent_pidfd));
    agent.forked.remove(child->id);
}

}  // namespace

void watch_lazy_dump(agent_state& agent, const std::shared_ptr<child_relay>& relay, child_process dump, job_dir job,
                     std::shared_ptr<criu_workspace> workspace, int pid) {
    relay->pages_sent = std::make_shared<one_shot_event>(agent.io.get_executor());
    spawn(agent.io.get_executor(),
          finish_lazy_dump(std::move(dump), std::move(job), std::move(workspace), pid, relay->pages_sent, relay->pages),
          fmt::format("serving the pages of pid {}", pid));
}

void start_page_pump(const std::shared_ptr<child_relay>& relay) {
    spawn(relay->peer->get_executor(), page_stream::run(relay->pages, relay->peer), "streaming a lazy dump's pages");
}

asio::awaitable<void> end_page_serving(std::shared_ptr<child_relay> relay) {
    if (!relay->pages) co_return;
    relay->pages->close();
    if (relay->pages_sent) co_await relay->pages_sent->wait();
}

void start_child_relay(agent_state& agent, std::shared_ptr<child_relay> relay, std::shared_ptr<forked_child> child,
                       unique_fd parent_pidfd) {
    std::weak_ptr<child_relay> weak = relay;
    child->signal = [&agent, weak, id = child->id](int signal) {
        if (auto r = weak.lock()) spawn(agent.io.get_executor(), send_signal(r, signal), fmt::format("signalling child {}", id));
    };
    agent.forked.add(child);
    auto what = fmt::format("relaying child {} on {}", child->id, child->host);
    spawn(agent.io.get_executor(), relay_child(agent, std::move(relay), std::move(child), std::move(parent_pidfd)), std::move(what));
}

}  // namespace rfork::agent
