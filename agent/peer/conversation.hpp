// What both roles of the agent say and check at the start and end of a
// connection.
#pragma once

#include <rfork/detail/frame_io.hpp>
#include <rfork/protocol.hpp>

#include <fmt/core.h>

#include <asio/awaitable.hpp>

#include <optional>
#include <string>
#include <system_error>

namespace rfork::agent {

// Why a request failed: the code and the text its requester is told.
struct failure {
    std::error_code code;
    std::string text;
};

// Reads the peer's handshake; a failure if it is malformed, of another
// version, or not from the `expected` role (`refusal` then says who may).
template <typename Stream>
asio::awaitable<std::optional<failure>> expect_handshake(Stream& stream, protocol::role expected,
                                                         const char* refusal) {
    protocol::handshake hello;
    if (auto ec = co_await detail::read_handshake(stream, hello)) {
        if (ec == errc::unsupported_version)
            co_return failure{ec, fmt::format("the peer speaks protocol version {}, this agent {}", hello.version,
                                              protocol::protocol_version)};
        co_return failure{ec, "bad handshake: " + ec.message()};
    }
    if (hello.who != expected) co_return failure{errc::unexpected_role, refusal};
    co_return std::nullopt;
}

// The agent's handshake followed by one message: how an agent answers a
// program, and how a receiving agent prepares the restored child's answer.
template <typename Message>
detail::bytes handshake_and(const Message& message) {
    return protocol::encode_with_handshake(protocol::role::agent, message);
}

}  // namespace rfork::agent
