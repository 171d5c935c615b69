// Doctor's checks on the network: the listen address is free (or this host's
// agent holds it), and each --peer answers a probe through a full connection
// made as a sending agent makes it.
#include "doctor/doctor_checks.hpp"

#include "common/watchdog.hpp"
#include "peer/deadline.hpp"
#include "peer/peer_connect.hpp"
#include "peer/peer_connection.hpp"
#include "peer/tls.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/detail/local_request.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/use_future.hpp>

#include <fmt/core.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <sstream>

namespace rfork::agent {

namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

constexpr connect_limits probe_limits{5s, 5s, 10s};

// Runs `task` to its end, or for at most `bound`; nothing when it did not end.
template <typename T>
std::optional<T> run_for(asio::awaitable<T> task, std::chrono::seconds bound) {
    asio::io_context io;
    auto done = asio::co_spawn(io, std::move(task), asio::use_future);
    io.run_for(bound);
    if (done.wait_for(0s) != std::future_status::ready) return std::nullopt;
    return done.get();
}

// Whether the process holds a TCP socket listening on `port`: its sockets'
// inodes (/proc/PID/fd) among the listening rows of its network namespace's
// tables (/proc/PID/net/tcp, tcp6). Reads only; nothing of the process is touched.
bool holds_listener(int pid, std::uint16_t port) {
    std::set<std::string> inodes;
    std::error_code ec;
    namespace fs = std::filesystem;
    for (fs::directory_iterator it(fmt::format("/proc/{}/fd", pid), ec), end; !ec && it != end; it.increment(ec)) {
        auto target = fs::read_symlink(it->path(), ec).string();
        if (!ec && target.starts_with("socket:[") && target.ends_with("]"))
            inodes.insert(target.substr(8, target.size() - 9));
    }
    ec.clear();
    for (const char* table : {"tcp", "tcp6"}) {
        std::ifstream in(fmt::format("/proc/{}/net/{}", pid, table));
        std::string line;
        std::getline(in, line);  // the heading
        while (std::getline(in, line)) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            std::istringstream row(line);
            std::string field[10];
            for (auto& f : field) row >> f;
            auto colon = field[1].rfind(':');
            if (field[3] != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
            if (std::strtoul(field[1].c_str() + colon + 1, nullptr, 16) == port && inodes.count(field[9])) return true;
        }
    }
    return false;
}

// The pid of this host's agent when it holds `port`: it answers on its local
// socket (as `rfork-agent list` asks), and the process there listens on the
// port. 0 otherwise.
int agent_holding(const std::string& socket_path, std::uint16_t port) {
    protocol::list_request request;
    auto answer = run_for(detail::local_request(socket_path, protocol::encode(request)), 5s);
    if (!answer || answer->ec || answer->frame.type != protocol::message_type::list_reply) return 0;
    asio::io_context io;
    asio::local::stream_protocol::socket local(io);
    std::error_code ec;
    local.connect(socket_path, ec);
    ucred peer{};
    socklen_t length = sizeof peer;
    if (ec || ::getsockopt(local.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return 0;
    return holds_listener(peer.pid, port) ? peer.pid : 0;
}

// What came of a probe, before it is judged.
struct probe_outcome {
    std::optional<connect_failure> unconnected;
    std::error_code lost;  // after both handshakes: sending the probe or reading its answer
    detail::received_frame answer;
};

asio::awaitable<probe_outcome> probe(endpoint where, asio::ssl::context* tls) {
    auto ex = co_await asio::this_coro::executor;
    auto peer = std::make_shared<peer_connection>(ex);
    probe_outcome outcome;
    outcome.unconnected = co_await connect_to_agent(peer, where, tls, probe_limits);
    if (outcome.unconnected) co_return outcome;
    watchdog due(*peer, probe_limits.handshake);  // for the question and its answer together
    protocol::probe_request question;  // named: GCC 12 and temporaries around co_await
    outcome.lost = due.timed_out_or(co_await detail::write_message(*peer, question));
    if (!outcome.lost)
        outcome.lost = co_await read_frame_within(*peer, outcome.answer, protocol::max_control_payload, due);
    peer->close();
    co_return outcome;
}

check_result unconnected(const options& opts, const std::string& what, const endpoint& peer,
                         const connect_failure& f) {
    using step = connect_failure::step;
    bool secret = !opts.secret_file.empty(), certificates = !opts.cert.empty();
    switch (f.at) {
    case step::reach:
        if (f.code.category() == asio::error::get_netdb_category() ||
            f.code.category() == asio::error::get_addrinfo_category())
            return failed(what, fmt::format("cannot resolve {}: {}", peer.host, f.why),
                          "name the peer by an address, or by a name this host resolves (/etc/hosts, DNS)");
        if (f.code == asio::error::connection_refused)
            return failed(what, fmt::format("cannot connect: {}", f.why),
                          fmt::format("start rfork-agent there (systemctl start rfork-agent), listening on port {}",
                                      peer.port));
        return failed(what, fmt::format("cannot connect: {}", f.why),
                      fmt::format("make sure that host is up and reachable from here (ping {}), and that firewalls "
                                  "let TCP port {} through",
                                  peer.host, peer.port));
    case step::tls:
        if (f.code == asio::error::timed_out)
            return failed(what, fmt::format("no TLS answer within {} s", probe_limits.handshake.count()),
                          "make sure an rfork-agent listens there, not another program");
        if (!secret && !certificates)
            return failed(what,
                          fmt::format("no TLS ({}): without credentials this agent speaks only to agents of its own "
                                      "host, with the host's secret {}, and the agent there holds other credentials",
                                      f.why, local_secret_path(opts.socket_path)),
                          "give both agents the same credentials: secret-file PATH (rfork-agent keygen PATH), "
                          "or cert, key and ca");
        if (secret)
            return failed(what,
                          fmt::format("no TLS ({}): the agent there does not hold the secret of {} (or holds "
                                      "none)",
                                      f.why, opts.secret_file),
                          fmt::format("copy {} to that host (root's, mode 0600) and run its agent with "
                                      "secret-file set to it",
                                      opts.secret_file));
        return failed(what,
                      fmt::format("no TLS ({}): its certificate is not signed by {}, or ours is not signed by the "
                                  "authority it trusts (or it has no credentials)",
                                  f.why, opts.ca),
                      "give both hosts certificates of one authority (rfork-agent keygen --host NAME --ca DIR OUT) "
                      "and that authority's ca.crt as ca");
    case step::wrong_host:
        return failed(what, fmt::format("the agent there {}: this agent would send it nothing", f.why),
                      fmt::format("name the peer as its certificate does, or make that host's certificate again "
                                  "naming {} (rfork-agent keygen --host NAME --host {} --ca DIR OUT)",
                                  peer.host, peer.host));
    case step::lost:
    case step::handshake:
        if (f.code == errc::unsupported_version)
            return failed(what, fmt::format("no rfork handshake: {}", f.why),
                          "run the same version of rfork-agent on both hosts");
        return failed(what, fmt::format("no rfork handshake: {}", f.why),
                      "make sure an rfork-agent listens there, not another program");
    }
    return failed(what, f.why, {});
}

// The answer to a probe, judged: who is there, and whether forks from here can work.
check_result judge(const options& opts, const std::string& what, const probe_outcome& outcome) {
    auto& frame = outcome.answer;
    if (outcome.lost)
        return failed(what, fmt::format("no answer to the probe: {}", outcome.lost.message()),
                      "look at the log of the agent there (journalctl -u rfork-agent)");
    if (frame.type == protocol::message_type::error) {
        auto e = protocol::error_of(frame.payload);
        if (e.code == errc::unexpected_message)
            return warned(what, "the peer's agent is older: it does not answer probes (its TLS and handshake work)",
                          "install this version of rfork-agent there");
        return failed(what, fmt::format("the agent there refused the probe: {}", e.text),
                      "look at the log of the agent there (journalctl -u rfork-agent)");
    }
    protocol::probe_reply reply;
    if (frame.type != protocol::message_type::probe_reply || protocol::decode(frame.payload, reply))
        return failed(what, "an answer that is not a probe's", "make sure an rfork-agent listens there");
    auto who = fmt::format("agent '{}', protocol {}", reply.host, reply.version);
    if (reply.no_lazy_pages.empty()) return passed(what, who + ", takes lazy pages");
    if (opts.lazy_pages)
        return failed(what,
                      fmt::format("{} takes no lazy pages ({}), which this agent sends: forks of large "
                                  "single-threaded programs to it fail",
                                  who, reply.no_lazy_pages),
                      reply.no_lazy_pages == "--no-lazy-pages"
                          ? "no-lazy-pages on every agent, or on none"
                          : "there: sysctl -w fs.pipe-max-size=4194304 (rfork-agent doctor there says more); or "
                            "no-lazy-pages here");
    return passed(what, who + ", takes no lazy pages (" + reply.no_lazy_pages + "), as this agent sends none");
}

}  // namespace

check_result check_listen(const options& opts) {
    auto what = fmt::format("listen address {}", opts.listen.to_string());
    std::error_code ec;
    auto address = asio::ip::make_address(opts.listen.host, ec);
    if (ec)
        return failed(what, fmt::format("'{}' is not a numeric address", opts.listen.host),
                      "listen ADDR:PORT with one of this host's addresses (ip -brief address), or 0.0.0.0");
    // Bound as the agent binds it; closed again at once.
    asio::io_context io;
    tcp::acceptor acceptor(io);
    tcp::endpoint where(address, opts.listen.port);
    acceptor.open(where.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(where, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    std::error_code ignored;
    acceptor.close(ignored);
    if (!ec) return passed(what, "free");
    if (ec == asio::error::address_in_use) {
        if (int pid = agent_holding(opts.socket_path, opts.listen.port))
            return passed(what, fmt::format("held by this host's running rfork-agent (pid {}, answering at {})", pid,
                                            opts.socket_path));
        return failed(what, fmt::format("port {} is taken by a program that is not this host's rfork-agent",
                                        opts.listen.port),
                      fmt::format("stop that program (ss -ltnp 'sport = :{}' names it), or listen on another port",
                                  opts.listen.port));
    }
    if (ec == std::errc::address_not_available)
        return failed(what, fmt::format("{} is not an address of this host", opts.listen.host),
                      "listen on one of this host's addresses (ip -brief address), or 0.0.0.0");
    return failed(what, ec.message(), "listen on another address or port");
}

check_result check_peer(const options& opts, asio::ssl::context* tls, const endpoint& peer) {
    auto what = fmt::format("peer {}", peer.to_string());
    // Every step is bounded on its own; this bound only guards against a bug.
    auto outcome = run_for(probe(peer, tls), 60s);
    if (!outcome) return failed(what, "the probe did not end", "report this as a bug of rfork-agent doctor");
    if (outcome->unconnected) return unconnected(opts, what, peer, *outcome->unconnected);
    return judge(opts, what, *outcome);
}

}  // namespace rfork::agent
