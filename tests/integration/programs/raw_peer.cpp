// Speaks to an agent's network port the way a broken or foreign peer would,
// and prints what the agent answered, decoded.
//
//   raw_peer HOST PORT garbage|version|role|truncated|silent|stall
//
// silent sends nothing at all; stall sends a valid start of an image, then
// nothing more. Both wait for the agent to give up on them.
#include <rfork/protocol.hpp>

#include <asio.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: raw_peer HOST PORT garbage|version|role|truncated|silent|stall\n");
        return 2;
    }
    namespace protocol = rfork::protocol;
    std::string mode = argv[3];
    asio::io_context ctx;
    asio::ip::tcp::socket socket(ctx);
    asio::ip::tcp::resolver resolver(ctx);
    asio::connect(socket, resolver.resolve(argv[1], argv[2]));

    rfork::detail::bytes out;
    if (mode == "garbage") {
        std::string text = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        out.assign(text.begin(), text.end());
    } else if (mode == "version") {
        auto h = protocol::encode_handshake(protocol::role::sender, 99);
        out.assign(h.begin(), h.end());
    } else if (mode == "role") {
        auto h = protocol::encode_handshake(protocol::role::program);
        out.assign(h.begin(), h.end());
    } else if (mode == "truncated") {
        auto h = protocol::encode_handshake(protocol::role::sender);
        out.assign(h.begin(), h.end());
        protocol::image_begin begin{"raw", 1234, 5678, {}};
        auto frame = protocol::encode(begin);
        out.insert(out.end(), frame.begin(), frame.end() - 3);  // the stream ends inside a frame
    } else if (mode == "stall") {
        auto h = protocol::encode_handshake(protocol::role::sender);
        out.assign(h.begin(), h.end());
        protocol::image_begin begin{"raw", 1234, 5678, {}, 4096};
        protocol::file_manifest no_files;
        protocol::image_file file{"pages-1.img", 4096};
        for (auto frame : {protocol::encode(begin), protocol::encode(no_files), protocol::encode(file)})
            out.insert(out.end(), frame.begin(), frame.end());
    } else if (mode != "silent") {
        std::fprintf(stderr, "raw_peer: unknown mode %s\n", mode.c_str());
        return 2;
    }
    asio::write(socket, asio::buffer(out));
    std::error_code ignored;  // the agent may have answered and closed already
    if (mode != "silent" && mode != "stall") socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);

    // Read the whole answer until the agent closes.
    rfork::detail::bytes answer;
    std::error_code ec;
    for (;;) {
        unsigned char buffer[4096];
        auto n = socket.read_some(asio::buffer(buffer), ec);
        answer.insert(answer.end(), buffer, buffer + n);
        if (ec) break;
    }
    protocol::stream_decoder decoder(true);
    decoder.feed(answer);
    for (;;) {
        auto result = decoder.next();
        if (result == protocol::stream_decoder::result::handshake) {
            std::printf("handshake version=%u role=%u\n", decoder.peer().version, unsigned(decoder.peer().who));
        } else if (result == protocol::stream_decoder::result::frame) {
            auto& frame = decoder.last_frame();
            if (frame.type == protocol::message_type::error) {
                protocol::error_message e;
                if (protocol::decode(frame.payload, e)) return std::printf("malformed error\n"), 1;
                std::printf("error code=%d message=%s\n", e.code.value(), e.text.c_str());
            } else {
                std::printf("frame type=%u\n", unsigned(frame.type));
            }
        } else {
            break;
        }
    }
    if (auto bad = decoder.finish()) std::printf("answer undecodable: %s\n", bad.message().c_str());
    std::printf("closed\n");
    return 0;
}
