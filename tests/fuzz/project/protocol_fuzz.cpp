// libFuzzer target: every byte a peer can send an agent. The first input byte
// picks where the stream starts (a handshake or not) and how it is cut into
// reads; the rest is the stream. Each frame that passes the checks is then
// decoded as every message type it could claim to be.
#include <rfork/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace proto = rfork::protocol;

namespace {

template <typename Message>
void decode_as(std::span<const unsigned char> payload) {
    Message m;
    if (!proto::decode(payload, m)) {
        // A decoded message must encode back to the same payload.
        auto frame = proto::encode(m);
        if (frame.size() != proto::frame_header_size + payload.size() ||
            !std::equal(payload.begin(), payload.end(), frame.begin() + proto::frame_header_size))
            __builtin_trap();
    }
}

void decode_payload(const proto::stream_decoder::frame& f) {
    std::span<const unsigned char> p(f.payload);
    switch (f.type) {
    case proto::message_type::error: decode_as<proto::error_message>(p); break;
    case proto::message_type::fork_request: decode_as<proto::fork_request>(p); break;
    case proto::message_type::fork_reply: decode_as<proto::fork_reply>(p); break;
    case proto::message_type::image_begin: decode_as<proto::image_begin>(p); break;
    case proto::message_type::image_file: decode_as<proto::image_file>(p); break;
    case proto::message_type::restored: decode_as<proto::restored>(p); break;
    case proto::message_type::probe_request: decode_as<proto::probe_request>(p); break;
    case proto::message_type::probe_reply: decode_as<proto::probe_reply>(p); break;
    case proto::message_type::child_output: decode_as<proto::child_output>(p); break;
    case proto::message_type::child_exit: decode_as<proto::child_exit>(p); break;
    case proto::message_type::signal_child: decode_as<proto::signal_child>(p); break;
    case proto::message_type::wait_request: decode_as<proto::wait_request>(p); break;
    case proto::message_type::wait_reply: decode_as<proto::wait_reply>(p); break;
    case proto::message_type::kill_request: decode_as<proto::kill_request>(p); break;
    case proto::message_type::list_reply: decode_as<proto::list_reply>(p); break;
    default: break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const bool handshake = data[0] & 1;
    const std::size_t chunk = 1 + (data[0] >> 1);  // 1..128 bytes per read
    std::span<const unsigned char> stream(data + 1, size - 1);
    proto::stream_decoder decoder(handshake, 1 << 20);
    for (std::size_t at = 0; at < stream.size(); at += chunk) {
        decoder.feed(stream.subspan(at, std::min(chunk, stream.size() - at)));
        for (;;) {
            auto r = decoder.next();
            if (r == proto::stream_decoder::result::frame) decode_payload(decoder.last_frame());
            if (r == proto::stream_decoder::result::need_more || r == proto::stream_decoder::result::error) break;
        }
        if (decoder.error()) return 0;
    }
    decoder.finish();
    return 0;
}
