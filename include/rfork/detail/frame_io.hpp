// Reading and writing handshakes and frames on any Asio stream, as coroutines
// that report errors as codes (never throw), for the library and the agent.
#pragma once

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <cstdint>
#include <span>
#include <system_error>

namespace rfork::detail {

inline constexpr auto as_tuple_awaitable = asio::experimental::as_tuple(asio::use_awaitable);

struct received_frame {
    protocol::message_type type{};
    bytes payload;
};

template <typename Stream>
asio::awaitable<std::error_code> write_bytes(Stream& stream, std::span<const unsigned char> data) {
    auto [ec, n] = co_await asio::async_write(stream, asio::buffer(data.data(), data.size()), as_tuple_awaitable);
    co_return ec;
}

template <typename Stream, typename Message>
asio::awaitable<std::error_code> write_message(Stream& stream, const Message& m) {
    auto frame = protocol::encode(m);
    co_return co_await write_bytes(stream, frame);
}

// An end of stream inside what was expected is `truncated`; before its first
// byte it is asio::error::eof, so callers can tell a clean close.
inline std::error_code read_error(std::error_code ec, std::size_t got) {
    if (ec == asio::error::eof && got > 0) return errc::truncated;
    return ec;
}

template <typename Stream>
asio::awaitable<std::error_code> read_handshake(Stream& stream, protocol::handshake& out) {
    std::array<unsigned char, protocol::handshake_size> buf{};
    auto [ec, n] = co_await asio::async_read(stream, asio::buffer(buf), as_tuple_awaitable);
    if (ec) co_return read_error(ec, n);
    co_return protocol::decode_handshake(buf, out);
}

template <typename Stream>
asio::awaitable<std::error_code> read_frame(Stream& stream, received_frame& out,
                                            std::uint32_t limit = protocol::max_frame_payload) {
    std::array<unsigned char, protocol::frame_header_size> header{};
    auto [ec, n] = co_await asio::async_read(stream, asio::buffer(header), as_tuple_awaitable);
    if (ec) co_return read_error(ec, n);
    protocol::frame_header h;
    if (auto bad = protocol::decode_frame_header(header, h, limit)) co_return bad;
    out.type = h.type;
    out.payload.resize(h.length);
    if (h.length > 0) {
        auto [ec2, n2] = co_await asio::async_read(stream, asio::buffer(out.payload), as_tuple_awaitable);
        if (ec2) co_return ec2 == asio::error::eof ? std::error_code(errc::truncated) : ec2;
    }
    co_return protocol::check_frame(header, h, out.payload);
}

}  // namespace rfork::detail
