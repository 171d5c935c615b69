// One file over one TCP connection, for the seed pipeline baseline of
// scripts/bench (dump, zip, send, unzip, restore).
//
//   tcp_copy receive PORT FILE    accepts one connection, writes what comes to FILE
//   tcp_copy send FILE HOST:PORT  sends FILE, then closes
#include <asio.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using asio::ip::tcp;

void receive(unsigned short port, const std::string& path) {
    asio::io_context ctx;
    tcp::acceptor acceptor(ctx, {tcp::v4(), port});
    std::printf("listening\n");
    std::fflush(stdout);
    tcp::socket socket = acceptor.accept();
    std::ofstream out(path, std::ios::binary);
    std::vector<char> buffer(1 << 20);
    for (;;) {
        std::error_code ec;
        auto n = socket.read_some(asio::buffer(buffer), ec);
        out.write(buffer.data(), static_cast<std::streamsize>(n));
        if (ec == asio::error::eof) break;
        if (ec) throw std::system_error(ec);
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

void send(const std::string& path, const std::string& endpoint) {
    auto colon = endpoint.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("expected HOST:PORT");
    asio::io_context ctx;
    tcp::socket socket(ctx);
    asio::connect(socket, tcp::resolver(ctx).resolve(endpoint.substr(0, colon), endpoint.substr(colon + 1)));
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::vector<char> buffer(1 << 20);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
        asio::write(socket, asio::buffer(buffer.data(), static_cast<std::size_t>(in.gcount())));
    socket.shutdown(tcp::socket::shutdown_send);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string mode = argc == 4 ? argv[1] : "";
        if (mode == "receive") receive(static_cast<unsigned short>(std::stoul(argv[2])), argv[3]);
        else if (mode == "send") send(argv[2], argv[3]);
        else {
            std::fprintf(stderr, "usage: tcp_copy receive PORT FILE | send FILE HOST:PORT\n");
            return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tcp_copy: %s\n", e.what());
        return 1;
    }
}
