// Reaching the local agent, and failures as the user reads them: the one
// place that says "no rfork agent at ..." and puts "rfork: " before a message.
#pragma once

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <sys/un.h>

#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace rfork::detail {

using local_socket = asio::local::stream_protocol::socket;

// What a user reads of a failure: "rfork: " and the text, once. Agents send
// error texts bare (protocol.hpp); one of an older version still sends the
// prefix, which is then not doubled.
inline std::string user_message(std::string_view text) {
    constexpr std::string_view prefix = "rfork: ";
    if (text.starts_with(prefix)) return std::string(text);
    return std::string(prefix) + std::string(text);
}

// A failed request: its code and the user's message. No code: success.
struct agent_error {
    std::error_code ec;
    std::string message;
};

inline agent_error failure(std::error_code ec, std::string_view text) { return {ec, user_message(text)}; }

// An error frame's payload, as the user reads it.
inline agent_error error_from_agent(std::span<const unsigned char> payload) {
    auto e = protocol::error_of(payload);
    return failure(e.code, e.text);
}

inline agent_error agent_not_found(const std::string& path, std::string_view why) {
    return failure(errc::agent_not_found, "no rfork agent at " + path + " (" + std::string(why) +
                                              "); start rfork-agent on this machine, or set RFORK_AGENT_SOCKET");
}

// Whether `path` can name a unix socket at all, checked before anything is
// done: Asio throws for a path longer than sockaddr_un holds.
inline agent_error check_agent_socket(const std::string& path) {
    if (path.size() >= sizeof(sockaddr_un::sun_path))
        return agent_not_found(path, "the path has " + std::to_string(path.size()) + " bytes, a unix socket's at most " +
                                         std::to_string(sizeof(sockaddr_un::sun_path) - 1));
    return {};
}

struct agent_connection {
    local_socket socket;
    agent_error error;
};

// Connects to the local agent at `path`, on the calling coroutine's executor.
inline asio::awaitable<agent_connection> connect_to_agent(std::string path) {
    // The executor first, on a line of its own: GCC 12 destroys twice a
    // temporary of an aggregate made in a full-expression with co_await.
    auto executor = co_await asio::this_coro::executor;
    agent_connection connection{local_socket(executor), check_agent_socket(path)};
    if (connection.error.ec) co_return connection;
    auto [ec] = co_await connection.socket.async_connect(asio::local::stream_protocol::endpoint(path),
                                                         asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) connection.error = agent_not_found(path, ec.message());
    co_return connection;
}

}  // namespace rfork::detail
