#include "service/listeners.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace rfork::agent {

namespace fs = std::filesystem;

namespace {

// Binds the local socket, replacing a stale one but never a live agent's.
void bind_local_socket(asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                       bool open_to_users) {
    fs::create_directories(fs::path(path).parent_path());
    if (fs::exists(fs::symlink_status(path))) {
        asio::local::stream_protocol::socket probe(acceptor.get_executor());
        std::error_code ec;
        probe.connect(path, ec);
        if (!ec) throw std::runtime_error("another agent already listens at " + path);
        fs::remove(path);
    }
    acceptor.open();
    acceptor.bind(path);
    // Root only; with --local-users, anyone may connect and the agent checks the peer's uid.
    ::chmod(path.c_str(), open_to_users ? 0666 : 0600);
    acceptor.listen();
}

void bind_network(asio::ip::tcp::acceptor& acceptor, const rfork::endpoint& listen) {
    asio::ip::tcp::endpoint where(asio::ip::make_address(listen.host), listen.port);
    acceptor.open(where.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(where);
    acceptor.listen();
}

}  // namespace

void listeners::close() {
    std::error_code ignored;
    local->close(ignored);
    network->close(ignored);
}

listeners open_listeners(asio::io_context& io, const options& opts) {
    listeners open{std::make_shared<asio::local::stream_protocol::acceptor>(io),
                   std::make_shared<asio::ip::tcp::acceptor>(io)};
    bind_local_socket(*open.local, opts.socket_path, !opts.local_users.empty());
    bind_network(*open.network, opts.listen);
    return open;
}

}  // namespace rfork::agent
