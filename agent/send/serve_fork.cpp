#include "send/serve_fork.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/run_as.hpp"
#include "peer/peer_connect.hpp"
#include "send/checkpoint.hpp"
#include "send/child_relay.hpp"
#include "send/fork_plan.hpp"
#include "send/transfer.hpp"

#include <rfork/detail/process_info.hpp>
#include <rfork/endpoint.hpp>

#include <fmt/core.h>

#include <chrono>
#include <optional>
#include <variant>

namespace rfork::agent {

namespace {

constexpr auto connect_timeout = std::chrono::seconds(10);

using fork_outcome = std::variant<protocol::restored, failure>;

// Everything between a valid request and the reply; returns the child or why not.
// `pid` is the caller, or its snapshot, and `pidfd` that process's pidfd;
// `caller` who asked.
asio::awaitable<fork_outcome> fork_process(agent_state& agent, std::shared_ptr<child_relay> relay, int pid,
                                           int pidfd, ucred caller, protocol::fork_request request) {
    auto ep = endpoint::parse(request.endpoint);
    if (!ep) co_return failure{errc::bad_endpoint, "bad endpoint '" + request.endpoint + "': expected host:port"};
    if (auto refused = session_refusal(pid, detail::status_field(pid, "NSsid"))) co_return std::move(*refused);
    auto where = locate(agent, pid);
    if (!where)
        co_return failure{errc::not_permitted,
                          fmt::format("pid {} lives in a pid namespace this agent did not make; CRIU cannot dump it from here", pid)};
    // A child restored here whose memory is still arriving (lazy pages) is
    // dumped once it is all here: CRIU would read the holes.
    if (where->within && where->within->memory_here) co_await where->within->memory_here->wait();
    auto& limits = agent.opts.limits;
    if (auto failed = co_await connect_to_agent(relay->peer, *ep, agent.tls ? &*agent.tls : nullptr,
                                                {connect_timeout, limits.handshake_timeout, limits.idle_timeout}))
        co_return connect_refusal(*failed, request.endpoint, credentials_of(agent.opts));
    auto image = co_await checkpoint(agent, relay, std::move(*where), pid, pidfd, caller, request);
    if (auto* f = std::get_if<failure>(&image)) co_return std::move(*f);
    co_return co_await transfer(agent, relay, std::move(std::get<checkpoint_image>(image)), pid, std::move(request));
}

// The parent's stdout, stderr and stdin (when it forwards it), as the relay
// uses them: a user's stdio is used as that user (parent_stdio.hpp), and
// only as the parent's own open files allow.
void open_parent_stdio(agent_state& agent, child_relay& relay, const ucred& cred, std::vector<unique_fd>& stdio,
                       bool forward_stdin) {
    auto ex = agent.io.get_executor();
    std::optional<run_as> stdio_as;
    if (cred.uid != 0) stdio_as = run_as{cred.uid, cred.gid, status_numbers(cred.pid, "Groups:"), 0};
    const run_as* as = stdio_as ? &*stdio_as : nullptr;
    relay.out.emplace(ex, std::move(stdio[0]), as);
    relay.err.emplace(ex, std::move(stdio[1]), as);
    if (forward_stdin) relay.in.emplace(ex, std::move(stdio[2]), as);
    if (!relay.out->usable()) log("pid {}'s stdout is not open for writing: its child's output there is dropped", cred.pid);
    if (!relay.err->usable()) log("pid {}'s stderr is not open for writing: its child's output there is dropped", cred.pid);
    if (relay.in && !relay.in->usable())
        log("pid {}'s stdin is not open for reading: its child's stdin ends at once", cred.pid);
}

}  // namespace

asio::awaitable<void> serve_fork(agent_state& agent, local_socket program, ucred cred, unique_fd caller,
                                 protocol::fork_request request, std::vector<unique_fd> stdio) {
    auto found = find_checkpoint_target(cred, request, stdio);
    if (auto* f = std::get_if<failure>(&found)) {
        co_await answer_failure(program, *f);
        co_return;
    }
    auto& target = std::get<checkpoint_target>(found);
    int pid = target.pid;
    int target_pidfd = target.snapshot_pidfd ? target.snapshot_pidfd.get() : caller.get();
    unique_fd parent_pidfd = std::move(caller);  // still open: target_pidfd may be it

    emit_event("fork_request", {{"pid", cred.pid}, {"uid", cred.uid}, {"endpoint", request.endpoint},
                                {"snapshot_pid", pid == cred.pid ? 0 : pid}});
    if (pid == cred.pid)
        log("fork request from pid {} (uid {}) to {}", cred.pid, cred.uid, request.endpoint);
    else
        log("fork request from pid {} (uid {}) to {}, for its snapshot pid {}", cred.pid, cred.uid, request.endpoint, pid);
    auto started = std::chrono::steady_clock::now();
    auto relay = std::make_shared<child_relay>(agent.io.get_executor());
    fork_outcome outcome;
    try {
        outcome = co_await fork_process(agent, relay, pid, target_pidfd, cred, request);
    } catch (const std::exception& e) {
        outcome = failure{errc::internal_error, e.what()};
    }
    if (auto* f = std::get_if<failure>(&outcome)) {
        co_await end_page_serving(relay);  // a lazy dump serving pages gives up; the program hears once it is gone
        emit_event("fork_failed", {{"pid", cred.pid}, {"code", f->code.value()}, {"text", f->text}});
        log("fork request from pid {} failed: {}", cred.pid, f->text);
        co_await answer_failure(program, *f);
        co_return;
    }
    auto& restored = std::get<protocol::restored>(outcome);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    emit_event("forked", {{"pid", cred.pid}, {"endpoint", request.endpoint}, {"id", restored.child_id},
                          {"child_pid", restored.pid}, {"us", static_cast<std::int64_t>(ms * 1000)}});
    log("forked pid {} to {}: child {} runs there as pid {} ({:.1f} ms)", cred.pid, request.endpoint,
        restored.child_id, restored.pid, ms);

    open_parent_stdio(agent, *relay, cred, stdio, request.flags & protocol::fork_request::forward_stdin);
    auto child = std::make_shared<forked_child>(agent.io.get_executor());
    child->id = restored.child_id;
    child->host = restored.host;
    child->parent_pid = cred.pid;
    child->parent_uid = cred.uid;
    start_child_relay(agent, std::move(relay), std::move(child), std::move(parent_pidfd));

    protocol::fork_reply reply{protocol::fork_side::parent, restored.child_id, restored.host, restored.pid};
    co_await answer(program, reply);
}

}  // namespace rfork::agent
