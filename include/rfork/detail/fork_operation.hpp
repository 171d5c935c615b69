// The one conversation with the local agent that a fork is.
//
// What is checkpointed waits for its answer in a read, so the checkpoint holds
// a process blocked there with nothing of the answer consumed; the restored
// child's socket is replaced (CRIU --inherit-fd) by one on which the receiving
// agent has already written the child's answer.
//
// Two ways to get there. When the caller has one thread and no TCP
// connection, it forks a snapshot of itself (fork_snapshot.hpp), and runs on
// while CRIU works. Otherwise the caller asks and is itself checkpointed
// while it waits, frozen for the whole dump.
#pragma once

#include <rfork/detail/agent_connection.hpp>
#include <rfork/detail/fork_conversation.hpp>
#include <rfork/detail/fork_snapshot.hpp>
#include <rfork/detail/process_info.hpp>
#include <rfork/endpoint.hpp>
#include <rfork/error.hpp>
#include <rfork/options.hpp>
#include <rfork/protocol.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace rfork::detail {

// The plan of a fork, or why there is none: everything that can be checked
// before a process or a connection exists.
inline std::variant<fork_plan, fork_outcome> plan_fork(std::string endpoint_text, const fork_options& options) {
    if (!endpoint::parse(endpoint_text))
        return fork_failure(errc::bad_endpoint, "bad endpoint '" + endpoint_text + "': expected host:port, e.g. node2:7000");
    fork_plan plan;
    plan.endpoint = std::move(endpoint_text);
    plan.path = options.agent_socket.empty() ? agent_socket_from_environment() : options.agent_socket;
    if (auto bad = check_agent_socket(plan.path); bad.ec) return fork_outcome::of(std::move(bad));
    plan.flags = options.forward_stdin ? protocol::fork_request::forward_stdin : 0u;
    // The child's output goes where ours goes: the agent gets our stdout and stderr (and stdin, to forward it).
    plan.fds = options.forward_stdin ? std::vector<int>{1, 2, 0} : std::vector<int>{1, 2};
    return plan;
}

inline bool can_snapshot(const fork_options& options) {
    return options.how == capture::automatic && status_field(0, "Threads") == 1 && !has_tcp_connections(0);
}

// The caller itself is checkpointed while it waits for the answer.
inline asio::awaitable<fork_outcome> fork_caller(fork_plan plan) {
    auto connection = co_await connect_to_agent(plan.path);
    if (connection.error.ec) co_return fork_outcome::of(std::move(connection.error));
    // From the request on, this process may be checkpointed at any instant.
    auto request = fork_request_bytes(plan, inode_of(connection.socket.native_handle()));
    co_return co_await ask_agent(std::move(connection.socket), plan.path, std::move(request), std::move(plan.fds));
}

inline asio::awaitable<fork_outcome> fork_operation(asio::any_io_executor ex, std::string endpoint_text,
                                                    fork_options options) {
    auto planned = plan_fork(std::move(endpoint_text), options);
    if (auto* refused = std::get_if<fork_outcome>(&planned)) co_return std::move(*refused);
    auto plan = std::get<fork_plan>(std::move(planned));
    unreaped_snapshots::all().reap();
    if (can_snapshot(options)) co_return co_await fork_snapshot(std::move(ex), std::move(plan));
    co_return co_await fork_caller(std::move(plan));
}

}  // namespace rfork::detail
