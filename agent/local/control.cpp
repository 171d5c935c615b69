// Waiting for, signalling and listing children, on the local socket.
#include "local/control.hpp"

#include "common/log.hpp"

#include <asio/this_coro.hpp>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace rfork::agent {

namespace {

// A parent's requests are its own (or root's) to make.
bool may_control(const ucred& cred, const forked_child& child) { return cred.uid == 0 || cred.uid == child.parent_uid; }

}  // namespace

asio::awaitable<void> serve_wait(agent_state& agent, local_socket program, ucred cred,
                                 protocol::wait_request request) {
    auto child = agent.forked.find(request.child_id);
    if (!child || !may_control(cred, *child)) {
        failure f{errc::no_such_child, "no child " + request.child_id + " of this host's programs"};
        co_await answer_failure(program, f);
        co_return;
    }
    if (!child->finished()) {
        // The timer never expires: it is cancelled when the child ends.
        co_await child->ended.async_wait(detail::as_tuple_awaitable);
    }
    if (child->lost) {
        failure f{errc::agent_unreachable, "lost contact with child " + child->id + " on " + child->host + " (" +
                                               child->lost.message() + ") before it ended"};
        co_await answer_failure(program, f);
        co_return;
    }
    protocol::wait_reply reply{static_cast<std::uint32_t>(*child->status)};
    co_await answer(program, reply);
}

asio::awaitable<void> serve_kill(agent_state& agent, local_socket program, ucred cred,
                                 protocol::kill_request request) {
    // A child of this host's programs, running elsewhere: relayed to its host.
    if (auto child = agent.forked.find(request.child_id); child && may_control(cred, *child)) {
        if (child->finished() || !child->signal) {
            failure f{errc::no_such_child, "child " + child->id + " has ended"};
            co_await answer_failure(program, f);
            co_return;
        }
        log("pid {} sends signal {} to child {} on {}", cred.pid, request.signal, child->id, child->host);
        child->signal(static_cast<int>(request.signal));
        protocol::kill_reply done;
        co_await answer(program, done);
        co_return;
    }
    // A child running here (rfork-agent kill): only root may.
    auto hosted = agent.hosted.find(request.child_id);
    if (!hosted || cred.uid != 0) {
        failure f{errc::no_such_child, "no child " + request.child_id + " here"};
        co_await answer_failure(program, f);
        co_return;
    }
    log("pid {} sends signal {} to child {} (its namespace's init is pid {} here)", cred.pid, request.signal,
        hosted->id, hosted->init_pid);
    // Through a pidfd, checked to be its init's child: never a pid reused meanwhile.
    if (int error = signal_restored_process(hosted->init_pid, hosted->pid, static_cast<int>(request.signal)); error != 0) {
        failure f{errc::no_such_child, error == ESRCH ? "child " + request.child_id + " has ended"
                                                      : "cannot signal child " + request.child_id + ": " +
                                                            std::strerror(error)};
        co_await answer_failure(program, f);
        co_return;
    }
    protocol::kill_reply done;
    co_await answer(program, done);
}

asio::awaitable<void> serve_list(agent_state& agent, local_socket program) {
    protocol::list_reply reply;
    auto now = std::chrono::steady_clock::now();
    for (auto& [id, child] : agent.hosted.all()) {
        auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - child->started).count();
        reply.children.push_back({id, child->origin, child->pid, "running", static_cast<std::uint64_t>(age)});
    }
    co_await answer(program, reply);
}

}  // namespace rfork::agent
