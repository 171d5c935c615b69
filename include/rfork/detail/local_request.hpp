// One request to the local agent on a connection of its own, and its answer:
// how a parent waits for and signals its child (and how the agent's own
// command line asks it).
#pragma once

#include <rfork/detail/agent_connection.hpp>
#include <rfork/detail/frame_io.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

namespace rfork::detail {

struct local_answer {
    std::error_code ec;
    std::string message;  // on failure, the full explanation
    received_frame frame;
};

// Sends the handshake and `request` (an encoded frame) to the agent at
// `socket_path`; returns its answer, an error frame turned into ec/message.
inline asio::awaitable<local_answer> local_request(std::string socket_path, bytes request) {
    auto connection = co_await connect_to_agent(socket_path);
    if (connection.error.ec) co_return local_answer{connection.error.ec, std::move(connection.error.message), {}};
    auto hello = protocol::encode_handshake(protocol::role::program);
    bytes out(hello.begin(), hello.end());
    out.insert(out.end(), request.begin(), request.end());
    local_answer answer;
    protocol::handshake peer;
    if (auto ec = co_await write_bytes(connection.socket, out)) answer.ec = ec;
    if (!answer.ec) answer.ec = co_await read_handshake(connection.socket, peer);
    if (!answer.ec) answer.ec = co_await read_frame(connection.socket, answer.frame);
    if (answer.ec == asio::error::eof) answer.ec = errc::agent_lost;
    if (answer.ec) {
        answer.message = user_message("no answer from the agent at " + socket_path + ": " + answer.ec.message());
    } else if (answer.frame.type == protocol::message_type::error) {
        auto error = error_from_agent(answer.frame.payload);
        answer.ec = error.ec;
        answer.message = std::move(error.message);
    }
    co_return answer;
}

// What came of a wait: the child's status, or why there is none.
struct wait_outcome {
    agent_error error;
    int status = 0;  // the exit code, or 128 + the signal that ended the child

    static wait_outcome failed(std::error_code ec, std::string_view text) { return {failure(ec, text), 0}; }
    template <typename Handler>
    void complete(Handler&& handler) && {
        std::forward<Handler>(handler)(error.ec, status);
    }
};

// What came of a kill: nothing, or why it failed.
struct kill_outcome {
    agent_error error;

    static kill_outcome failed(std::error_code ec, std::string_view text) { return {failure(ec, text)}; }
    template <typename Handler>
    void complete(Handler&& handler) && {
        std::forward<Handler>(handler)(error.ec);
    }
};

inline asio::awaitable<wait_outcome> wait_for_child(std::string socket_path, std::string child_id) {
    protocol::wait_request request{std::move(child_id)};
    auto answer = co_await local_request(std::move(socket_path), protocol::encode(request));
    if (answer.ec) co_return wait_outcome{{answer.ec, std::move(answer.message)}, 0};
    protocol::wait_reply reply;
    if (answer.frame.type != protocol::message_type::wait_reply || protocol::decode(answer.frame.payload, reply))
        co_return wait_outcome::failed(errc::unexpected_message, "unexpected answer to wait");
    co_return wait_outcome{{}, static_cast<int>(reply.status)};
}

inline asio::awaitable<kill_outcome> signal_child(std::string socket_path, std::string child_id, int signal) {
    protocol::kill_request request{std::move(child_id), static_cast<std::uint32_t>(signal)};
    auto answer = co_await local_request(std::move(socket_path), protocol::encode(request));
    if (answer.ec) co_return kill_outcome{{answer.ec, std::move(answer.message)}};
    if (answer.frame.type != protocol::message_type::kill_reply)
        co_return kill_outcome::failed(errc::unexpected_message, "unexpected answer to kill");
    co_return kill_outcome{};
}

// What the child's side of a fork gets from wait or kill.
template <typename Outcome>
asio::awaitable<Outcome> refuse_as_child() {
    co_return Outcome::failed(errc::not_a_parent, "the child side of a fork has no child to wait for or signal");
}

// The awaitable forms: the outcome, or std::system_error with the full message.
inline asio::awaitable<int> status_or_throw(asio::awaitable<wait_outcome> op) {
    auto outcome = co_await std::move(op);
    if (outcome.error.ec) throw std::system_error(outcome.error.ec, outcome.error.message);
    co_return outcome.status;
}

inline asio::awaitable<void> done_or_throw(asio::awaitable<kill_outcome> op) {
    auto outcome = co_await std::move(op);
    if (outcome.error.ec) throw std::system_error(outcome.error.ec, outcome.error.message);
}

}  // namespace rfork::detail
