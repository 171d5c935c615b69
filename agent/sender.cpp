#include "sender.hpp"

#include "conversation.hpp"
#include "criu.hpp"
#include "criu_image.hpp"
#include "log.hpp"
#include "process.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/endpoint.hpp>

#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <variant>

namespace rfork::agent {

namespace fs = std::filesystem;
using asio::ip::tcp;
using detail::as_tuple_awaitable;

namespace {

constexpr std::uint32_t request_limit = 64 * 1024;
constexpr std::size_t chunk_size = 1 << 20;
constexpr auto connect_timeout = std::chrono::seconds(10);

// The program's end of the connection must really be its own open socket.
bool process_has_socket(int pid, std::uint64_t inode) {
    std::error_code ec;
    auto target = "socket:[" + std::to_string(inode) + "]";
    for (auto& entry : fs::directory_iterator(fmt::format("/proc/{}/fd", pid), ec))
        if (fs::read_symlink(entry.path(), ec).string() == target) return true;
    return false;
}

asio::awaitable<std::error_code> connect_with_timeout(tcp::socket& socket, const endpoint& ep) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex, connect_timeout);
    bool timed_out = false;
    timer.async_wait([&](std::error_code ec) {
        if (!ec) timed_out = true, socket.close();
    });
    tcp::resolver resolver(ex);
    auto port = std::to_string(ep.port);
    auto [resolve_ec, results] = co_await resolver.async_resolve(ep.host, port, as_tuple_awaitable);
    if (resolve_ec) {
        timer.cancel();
        co_return resolve_ec;
    }
    auto [cec, connected] = co_await asio::async_connect(socket, results, as_tuple_awaitable);
    timer.cancel();
    if (timed_out) co_return std::error_code(asio::error::timed_out);
    co_return cec;
}

// Streams every file of the image directory as image_file + image_data frames.
asio::awaitable<std::error_code> send_image_files(tcp::socket& peer, const fs::path& images) {
    std::vector<fs::path> files;
    for (auto& entry : fs::directory_iterator(images)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    detail::bytes chunk(chunk_size);
    for (auto& path : files) {
        unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0) co_return std::error_code(errno, std::generic_category());
        protocol::image_file header{path.filename().string(), static_cast<std::uint64_t>(st.st_size)};
        if (auto ec = co_await detail::write_message(peer, header)) co_return ec;
        for (std::uint64_t left = header.size; left > 0;) {
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk_size));
            auto got = ::read(fd.get(), chunk.data(), want);
            if (got <= 0) co_return got < 0 ? std::error_code(errno, std::generic_category()) : errc::truncated;
            auto frame = protocol::encode_frame(protocol::message_type::image_data,
                                                std::span(chunk.data(), static_cast<std::size_t>(got)));
            if (auto ec = co_await detail::write_bytes(peer, frame)) co_return ec;
            left -= static_cast<std::uint64_t>(got);
        }
    }
    protocol::image_end end;
    co_return co_await detail::write_message(peer, end);
}

// Everything between a valid request and the reply; returns the child or why not.
asio::awaitable<std::variant<protocol::restored, failure>> fork_process(agent_state& agent, int pid,
                                                                          const protocol::fork_request& request) {
    auto ep = endpoint::parse(request.endpoint);
    if (!ep) co_return failure{errc::bad_endpoint, "bad endpoint '" + request.endpoint + "': expected host:port"};

    tcp::socket peer(agent.io);
    if (auto ec = co_await connect_with_timeout(peer, *ep))
        co_return failure{errc::agent_unreachable,
                          fmt::format("cannot reach an rfork agent at {} ({})", request.endpoint, ec.message())};
    peer.set_option(tcp::no_delay(true));
    auto hello = protocol::encode_handshake(protocol::role::sender);
    if (auto ec = co_await detail::write_bytes(peer, hello))
        co_return failure{errc::agent_unreachable, fmt::format("lost the rfork agent at {} ({})", request.endpoint, ec.message())};
    protocol::handshake answer;
    if (auto ec = co_await detail::read_handshake(peer, answer); ec || answer.who != protocol::role::agent) {
        std::string why = ec == errc::unsupported_version
                              ? fmt::format("it speaks protocol version {}, this agent {}", answer.version,
                                            protocol::protocol_version)
                              : ec ? ec.message() : "it answered as something other than an agent";
        co_return failure{errc::agent_unreachable,
                          fmt::format("the peer at {} refused the handshake: {}", request.endpoint, why)};
    }

    auto stdio = inspect_stdio(pid);
    auto job = agent.make_job_dir(fmt::format("dump-{}-{}", pid, agent.next_job++));
    auto images = job.path() / "images";
    fs::create_directory(images);
    auto log_file = job / "dump.log";
    auto dump = spawn(dump_command(agent.criu, pid, images.string(), log_file, request.socket_inode, stdio.externals), {});
    int status = co_await wait_for_exit(dump);
    if (status != 0) {
        log("checkpoint of pid {} failed; CRIU said:", pid);
        log_criu_failure(log_file);
        co_return failure{errc::dump_failed, fmt::format("CRIU could not checkpoint pid {} ({}): {}", pid,
                                                         describe_wait_status(status), criu_error_line(log_file))};
    }
    if (!clear_external_terminal_sessions_in(images.string()))
        co_return failure{errc::dump_failed, "CRIU wrote a tty-info image rfork cannot read"};

    protocol::image_begin begin{agent.host, static_cast<std::uint32_t>(pid), request.socket_inode, stdio.keys};
    std::error_code ec = co_await detail::write_message(peer, begin);
    if (!ec) ec = co_await send_image_files(peer, images);
    job.remove();  // the image is sent or lost: either way it is no longer needed here
    if (ec)
        co_return failure{errc::transfer_failed,
                          fmt::format("sending the image to {} failed: {}", request.endpoint, ec.message())};

    detail::received_frame reply;
    if (auto rec = co_await detail::read_frame(peer, reply, request_limit))
        co_return failure{errc::transfer_failed, fmt::format("the agent at {} sent no answer after the image ({})",
                                                             request.endpoint, rec.message())};
    if (reply.type == protocol::message_type::error) {
        protocol::error_message e;
        if (protocol::decode(reply.payload, e)) e = {errc::malformed_message, "malformed error message"};
        if (e.text.starts_with("rfork: ")) e.text.erase(0, 7);
        co_return failure{e.code, fmt::format("{} (on {})", e.text, request.endpoint)};
    }
    protocol::restored child;
    if (reply.type != protocol::message_type::restored || protocol::decode(reply.payload, child))
        co_return failure{errc::unexpected_message, fmt::format("unexpected answer from the agent at {}", request.endpoint)};
    co_return child;
}

// Reads and checks the request; the checkpoint and transfer follow.
asio::awaitable<std::variant<protocol::restored, failure>> handle_request(agent_state& agent,
                                                                          asio::local::stream_protocol::socket& program,
                                                                          const ucred& cred) {
    if (auto refused = co_await expect_handshake(program, protocol::role::program,
                                                 "only programs may use the local socket"))
        co_return *refused;
    detail::received_frame frame;
    protocol::fork_request request;
    if (auto ec = co_await detail::read_frame(program, frame, request_limit))
        co_return failure{ec, "bad request: " + ec.message()};
    if (frame.type != protocol::message_type::fork_request || protocol::decode(frame.payload, request))
        co_return failure{errc::malformed_message, "expected a fork request"};
    if (!process_has_socket(cred.pid, request.socket_inode))
        co_return failure{errc::not_permitted, "the socket named in the request is not the caller's"};

    log("fork request from pid {} (uid {}) to {}", cred.pid, cred.uid, request.endpoint);
    auto started = std::chrono::steady_clock::now();
    auto outcome = co_await fork_process(agent, cred.pid, request);
    if (auto* child = std::get_if<protocol::restored>(&outcome)) {
        auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        log("forked pid {} to {}: child {} runs there as pid {} ({:.1f} ms)", cred.pid, request.endpoint,
            child->child_id, child->pid, ms);
    }
    co_return outcome;
}

}  // namespace

asio::awaitable<void> serve_program(agent_state& agent, asio::local::stream_protocol::socket program) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(program.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) co_return;

    std::variant<protocol::restored, failure> outcome;
    try {
        outcome = co_await handle_request(agent, program, cred);
    } catch (const std::exception& e) {
        outcome = failure{errc::internal_error, e.what()};
    }
    // The answer is the agent's handshake and one frame, exactly as the
    // receiving agent prepares it for the child.
    detail::bytes answer;
    if (auto* child = std::get_if<protocol::restored>(&outcome)) {
        answer = handshake_and(protocol::fork_reply{protocol::fork_side::parent, child->child_id, child->host, child->pid});
    } else {
        auto& f = std::get<failure>(outcome);
        if (f.code == asio::error::eof) co_return;  // the program left before asking
        log("fork request from pid {} failed: {}", cred.pid, f.text);
        answer = handshake_and(protocol::error_message{f.code, "rfork: " + f.text});
    }
    co_await detail::write_bytes(program, answer);
}

}  // namespace rfork::agent
