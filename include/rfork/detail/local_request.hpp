// One request to the local agent on a connection of its own, and its answer:
// how a parent waits for and signals its child.
#pragma once

#include <rfork/detail/frame_io.hpp>
#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/this_coro.hpp>

#include <string>
#include <system_error>

namespace rfork::detail {

struct local_answer {
    std::error_code ec;
    std::string message;  // on failure, the full explanation
    received_frame frame;
};

// Sends the handshake and `request` (an encoded frame) to the agent at
// `socket_path`; returns its answer, an error frame turned into ec/message.
inline asio::awaitable<local_answer> local_request(std::string socket_path, bytes request) {
    auto ex = co_await asio::this_coro::executor;
    asio::local::stream_protocol::socket socket(ex);
    asio::local::stream_protocol::endpoint where(socket_path);
    auto [connect_ec] = co_await socket.async_connect(where, as_tuple_awaitable);
    if (connect_ec)
        co_return local_answer{errc::agent_not_found,
                               "rfork: no rfork agent at " + socket_path + " (" + connect_ec.message() + ")", {}};
    auto hello = protocol::encode_handshake(protocol::role::program);
    bytes out(hello.begin(), hello.end());
    out.insert(out.end(), request.begin(), request.end());
    local_answer answer;
    protocol::handshake peer;
    if (auto ec = co_await write_bytes(socket, out)) answer.ec = ec;
    if (!answer.ec) answer.ec = co_await read_handshake(socket, peer);
    if (!answer.ec) answer.ec = co_await read_frame(socket, answer.frame);
    if (answer.ec == asio::error::eof) answer.ec = errc::agent_lost;
    if (answer.ec) {
        answer.message = "rfork: no answer from the agent at " + socket_path + ": " + answer.ec.message();
    } else if (answer.frame.type == protocol::message_type::error) {
        protocol::error_message e;
        if (auto bad = protocol::decode(answer.frame.payload, e)) e = {bad, "rfork: malformed error from the agent"};
        answer.ec = e.code;
        answer.message = e.text;
    }
    co_return answer;
}

inline asio::awaitable<int> wait_for_child(std::string socket_path, std::string child_id) {
    protocol::wait_request request{child_id};
    auto frame = protocol::encode(request);
    auto answer = co_await local_request(std::move(socket_path), std::move(frame));
    if (answer.ec) throw std::system_error(answer.ec, answer.message);
    protocol::wait_reply reply;
    if (answer.frame.type != protocol::message_type::wait_reply || protocol::decode(answer.frame.payload, reply))
        throw std::system_error(errc::unexpected_message, "rfork: unexpected answer to wait");
    co_return static_cast<int>(reply.status);
}

inline asio::awaitable<void> signal_child(std::string socket_path, std::string child_id, int signal) {
    protocol::kill_request request{child_id, static_cast<std::uint32_t>(signal)};
    auto frame = protocol::encode(request);
    auto answer = co_await local_request(std::move(socket_path), std::move(frame));
    if (answer.ec) throw std::system_error(answer.ec, answer.message);
    if (answer.frame.type != protocol::message_type::kill_reply)
        throw std::system_error(errc::unexpected_message, "rfork: unexpected answer to kill");
}

inline asio::awaitable<int> refuse_as_child(errc code) {
    throw std::system_error(code, "rfork: the child side of a fork has no child to wait for or signal");
    co_return 0;
}

}  // namespace rfork::detail
