#include "receive/child_life.hpp"

#include "common/children.hpp"
#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "receive/restore_plan.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <fmt/core.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {

constexpr std::size_t output_chunk = 64 * 1024;

// The child's stdout or stderr, to its parent's agent, or, once that is gone,
// to our stdout line by line.
asio::awaitable<void> pump_output(std::shared_ptr<restored_child> child, restored_child::output out,
                                  std::shared_ptr<peer_connection> peer) {
    protocol::child_output message;
    message.stream = out.which;
    std::vector<unsigned char> buffer(output_chunk);
    std::string pending;  // an unfinished line, when logging locally
    std::string label = child->record->id + (out.which == protocol::output_stream::stderr_stream ? " stderr" : "");
    for (;;) {
        auto [ec, n] = co_await out.stream->async_read_some(asio::buffer(buffer), as_tuple_awaitable);
        message.data.assign(buffer.begin(), buffer.begin() + static_cast<long>(n));
        if (n > 0) {
            auto frame = protocol::encode(message);
            if (!co_await peer->send(frame)) {
                pending.append(message.data.begin(), message.data.end());
                std::size_t start = 0;
                for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
                    auto line = std::string_view(pending).substr(start, nl - start);
                    if (out.terminal && line.ends_with('\r')) line.remove_suffix(1);
                    fmt::print("[{}] {}\n", label, line);
                }
                pending.erase(0, start);
                std::fflush(stdout);
            }
        }
        if (ec) break;  // end of file, or EIO from a pty master whose slave is closed
    }
    if (!pending.empty()) fmt::print("[{}] {}\n", label, pending), std::fflush(stdout);
}

// The namespace init's last line, once every byte of the child's output has
// gone. (Each awaitable is named before it is awaited: see the GCC 12 note
// in frame_io.hpp.)
asio::awaitable<std::string> wait_for_end(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer) {
    using namespace asio::experimental::awaitable_operators;
    auto ended = read_status_line(child);
    if (child->outputs.size() == 2) {  // stdout, and stderr when it is a file of its own
        auto out = pump_output(child, child->outputs[0], peer);
        auto err = pump_output(child, child->outputs[1], peer);
        auto all = std::move(ended) && std::move(out) && std::move(err);
        co_return co_await std::move(all);
    }
    if (child->outputs.size() == 1) {
        auto out = pump_output(child, child->outputs[0], peer);
        auto all = std::move(ended) && std::move(out);
        co_return co_await std::move(all);
    }
    co_return co_await std::move(ended);
}

// Nothing of the fork stays once its parent learns the end: with lazy
// pages, CRIU's daemon ends with the child (bounded, should it not).
asio::awaitable<void> end_lazy_daemon(std::shared_ptr<restored_child> child, std::chrono::seconds bound) {
    using namespace asio::experimental::awaitable_operators;
    auto memory = child->record->memory_here;
    if (!memory || memory->happened()) co_return;
    asio::steady_timer timer(co_await asio::this_coro::executor, bound);
    auto waited = memory->wait() || timer.async_wait(asio::use_awaitable);
    co_await std::move(waited);
    if (!memory->happened()) {
        log("child {}: the lazy-pages daemon outlived it; killed", child->record->id);
        ::kill(child->lazy_daemon.pid, SIGKILL);
        co_await memory->wait();
    }
}

void log_end(const hosted_child& record, const init_status& end, int init_wait_status, int status) {
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - record.started).count();
    emit_event("child_ended", {{"id", record.id}, {"pid", record.pid}, {"origin", record.origin}, {"status", status},
                               {"normal", end.what == init_status::kind::exited ? 1 : 0},
                               {"ms", static_cast<std::int64_t>(seconds * 1000)}});
    if (end.what == init_status::kind::exited)
        log("child {} (pid {} from {}) ended after {:.1f} s: {}", record.id, record.pid, record.origin, seconds,
            describe_wait_status(end.number));
    else
        log("child {} (pid {} from {}): its namespace ended abnormally ({})", record.id, record.pid, record.origin,
            describe_wait_status(init_wait_status));
}

// A child's namespace init, reaped, and its cgroup removed.
asio::awaitable<void> reap(std::shared_ptr<restored_child> child) {
    if (child->init.pidfd) co_await wait_for_exit(child->init);
    co_await remove_cgroup(child);
}

// However serve_child leaves before its end (an exception, or its coroutine
// destroyed), nobody waits on its child any more: its record and its place
// among --max-children go, the parent's agent is let go, and the child is
// killed and reaped. The normal way out does all of it in order and says so.
class child_end_guard {
public:
    child_end_guard(agent_state& agent, std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer)
        : agent_(agent), child_(std::move(child)), peer_(std::move(peer)) {}
    child_end_guard(const child_end_guard&) = delete;
    child_end_guard& operator=(const child_end_guard&) = delete;
    void ended() { ended_ = true; }
    ~child_end_guard() {
        if (ended_) return;
        agent_.hosted.remove(child_->record->id);
        kill_child(*child_);
        // Not while the agent stops: its io_context then runs nothing more.
        if ((child_->init.pidfd || child_->cgroup) && !agent_.io.stopped())
            spawn(agent_.io.get_executor(), reap(child_), "reaping child " + child_->record->id);
        child_->slot.release();
        peer_->close();
    }

private:
    agent_state& agent_;
    std::shared_ptr<restored_child> child_;
    std::shared_ptr<peer_connection> peer_;
    bool ended_ = false;
};

}  // namespace

asio::awaitable<void> take_requests(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer) {
    struct nobody_sends_more {
        std::shared_ptr<restored_child> child;
        ~nobody_sends_more() {
            end_input(*child);
            if (child->pages) child->pages->close();  // no more pages can come: the lazy-pages daemon gives up
        }
    } guard{child};
    detail::received_frame frame;
    while (!co_await detail::read_frame(*peer, frame)) {
        if (child->pages && lazy_page_server::carries(frame.type)) {
            if (!child->pages->take(frame)) {
                emit_event("memory_failed", {{"id", child->record->id}, {"code", int(errc::limit_exceeded)},
                                             {"text", "larger than --max-image-size"}});
                log("child {}: its memory is larger than this agent accepts (--max-image-size); killed",
                    child->record->id);
                kill_child(*child);
            }
        } else if (frame.type == protocol::message_type::child_input && child->input) {
            co_await asio::async_write(*child->input, asio::buffer(frame.payload), as_tuple_awaitable);
        } else if (frame.type == protocol::message_type::child_input_end) {
            end_input(*child);
        } else if (frame.type == protocol::message_type::signal_child && child->running && child->init.pidfd) {
            // Through pidfds checked to be this child's: no reused pid is hit.
            protocol::signal_child s;
            if (!protocol::decode(frame.payload, s)) {
                log("child {}: signal {} from its parent", child->record->id, s.signal);
                signal_restored_process(child->record->init_pid, child->record->pid, static_cast<int>(s.signal));
            }
        } else {
            break;
        }
    }
}

asio::awaitable<void> serve_child(agent_state& agent, std::shared_ptr<restored_child> child,
                                  std::shared_ptr<peer_connection> peer) {
    child_end_guard guard(agent, child, peer);
    if (!child->pages)  // else reading since the restore began
        spawn(agent.io.get_executor(), take_requests(child, peer), "the requests for child " + child->record->id);
    // The exit status goes last, after every byte of output.
    auto last_line = co_await wait_for_end(child, peer);
    auto end = parse_init_status(last_line);
    int init_wait_status = co_await wait_for_exit(child->init);
    agent.hosted.remove(child->record->id);  // nothing to list, signal or fork from any more
    co_await end_lazy_daemon(child, agent.opts.limits.idle_timeout);
    // Its cgroup and its place among --max-children go before its parent learns the end.
    co_await remove_cgroup(child);
    child->slot.release();

    bool exited = end.what == init_status::kind::exited;
    int status = exited ? shell_status(end.number) : 128 + SIGKILL;
    log_end(*child->record, end, init_wait_status, status);
    protocol::child_exit exit{static_cast<std::uint32_t>(status)};
    auto frame = protocol::encode(exit);
    co_await peer->send(frame);
    peer->close();
    guard.ended();
}

}  // namespace rfork::agent
