// rfork-agent: one binary on every machine, in both roles (see sender.hpp and
// receiver.hpp).
#include "common/agent_state.hpp"
#include "receive/child_cgroup.hpp"
#include "local/cli.hpp"
#include "criu/criu.hpp"
#include "doctor/doctor.hpp"
#include "common/host_facts.hpp"
#include "common/log.hpp"
#include "receive/ns_init.hpp"
#include "common/options.hpp"
#include "peer/peer_connection.hpp"
#include "receive/receiver.hpp"
#include "common/remove_tree.hpp"
#include "local/local.hpp"
#include "common/service_notify.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace fs = std::filesystem;
using namespace rfork::agent;

job_dir agent_state::make_job_dir(const std::string& name) {
    fs::path path = fs::path(opts.work_dir) / name;
    fs::create_directory(path);  // throws if it exists: a job never reuses another's directory
    fs::permissions(path, fs::perms::owner_all);
    return job_dir(path);
}

namespace {

// Out of descriptors or memory, accept fails at once for as long as the
// listening socket has a connection waiting: retried at once, it would spin.
bool lacks_resources(const std::error_code& ec) {
    // Asio reports errno in a category of its own, which compares equal to no std::errc.
    if (ec.category() != asio::system_category() && ec.category() != std::system_category()) return false;
    return ec.value() == EMFILE || ec.value() == ENFILE || ec.value() == ENOBUFS || ec.value() == ENOMEM;
}

constexpr auto accept_pause = std::chrono::milliseconds(100);

// `where` names the listener in the log.
template <typename Acceptor, typename Serve>
asio::awaitable<void> accept_loop(agent_state& agent, Acceptor& acceptor, Serve serve, std::string where) {
    asio::steady_timer pause(acceptor.get_executor());
    std::uint64_t failures = 0;  // in a row: one episode, one line when it starts and one when it ends
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(rfork::detail::as_tuple_awaitable);
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        if (ec) {
            bool wait = lacks_resources(ec);
            if (failures++ == 0)
                log("cannot accept connections on {}: {}{}", where, ec.message(),
                    wait ? fmt::format("; trying again every {} ms", accept_pause.count()) : std::string{});
            if (wait) {
                pause.expires_after(accept_pause);
                co_await pause.async_wait(rfork::detail::as_tuple_awaitable);
            }
            continue;
        }
        if (failures > 0) {
            log("accepting connections on {} again, after {} failed attempts", where, failures);
            failures = 0;
        }
        asio::co_spawn(agent.io, serve(agent, std::move(socket)), [](std::exception_ptr e) {
            if (!e) return;
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& what) {
                log("connection failed: {}", what.what());
            }
        });
    }
}

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

// Leftovers of an agent that died mid-job belong to nobody now.
void prepare_work_dir(const std::string& dir) {
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms::owner_all);
    for (auto& entry : fs::directory_iterator(dir)) remove_tree(entry.path());
}

// `keygen --host NAME [--host NAME ...] --ca DIR OUT`, or nullopt.
struct keygen_host {
    std::vector<std::string> names;
    std::string ca_dir, out_dir;
};
std::optional<keygen_host> keygen_host_args(const std::vector<std::string>& args) {
    keygen_host host;
    std::size_t i = 1;
    for (; i + 1 < args.size() && args[i] == "--host"; i += 2) host.names.push_back(args[i + 1]);
    if (host.names.empty() || args.size() != i + 3 || args[i] != "--ca") return std::nullopt;
    host.ca_dir = args[i + 1];
    host.out_dir = args[i + 2];
    return host;
}

// With certificates, the name this agent tells its peers (the origin of its
// forks) must be one its certificate holds, or they refuse its images:
// --name, by default the certificate's first name. Returns why not, or empty.
std::string name_from_certificate(const options& opts, agent_state& agent) {
    X509* own = SSL_CTX_get0_certificate(agent.tls->native_handle());
    auto names = certificate_names(own);
    auto name = opts.name.empty() ? names.front() : opts.name;
    if (!certificate_names_host(own, name))
        return fmt::format("--name {} is not a name of --cert {} (it names {}), and peers refuse the images of an "
                           "agent that claims a name its certificate does not hold. Fix: --name with one of those, "
                           "or make the certificate again with rfork-agent keygen --host {} --ca DIR OUT",
                           name, opts.cert, certificate_names_text(own), opts.name.empty() ? "NAME" : opts.name);
    agent.host = name;
    return {};
}

// Everything the agent does until it is stopped.
int serve(agent_state& agent) {
    const options& opts = agent.opts;
    asio::io_context& io = agent.io;
    agent.self_exe = fs::read_symlink("/proc/self/exe").string();
    agent.host = opts.name;
    // Checked before anything is made (the local secret, the work dir).
    agent.criu = find_criu(opts.criu, agent.self_exe);
    if (agent.criu.empty()) {
        log("no usable CRIU binary{} (an executable ELF file): run scripts/setup, or pass --criu PATH",
            opts.criu.empty() ? "" : " at " + opts.criu);
        return 1;
    }
    try {
        // Every connection between agents is authenticated, loopback included:
        // without credentials, by a secret only this host's root can read.
        if (!opts.secret_file.empty()) agent.tls.emplace(make_tls_context(opts.secret_file));
        else if (!opts.cert.empty()) agent.tls.emplace(make_tls_context(opts.cert, opts.key, opts.ca));
        else agent.tls.emplace(make_local_tls_context(local_secret_path(opts.socket_path)));
    } catch (const std::exception& e) {
        log("{}", e.what());
        return 1;
    }
    if (!opts.cert.empty()) {
        if (auto wrong = name_from_certificate(opts, agent); !wrong.empty()) {
            log("{}", wrong);
            return 1;
        }
    }
    if (agent.host.empty()) {
        char name[256] = {};
        ::gethostname(name, sizeof name - 1);
        agent.host = name;
    }
    set_log_name(agent.host);
    // Once its options are known good, before anything is spawned: on cgroup v2
    // the agent moves into a leaf of its own.
    auto cgroups = prepare_cgroup_parent();
    if (auto* parent = std::get_if<cgroup_parent>(&cgroups)) {
        agent.cgroups = *parent;
    } else if (!opts.allow_unlimited_children) {
        log("cannot give children cgroups of their own: {}. Without them a child could take every pid and all "
            "the memory of this host, so the agent does not start. Mount the cgroup v2 hierarchy with the pids "
            "and memory controllers (under systemd: Delegate=pids memory in rfork-agent.service), or accept children "
            "without limits: --allow-unlimited-children",
            std::get<std::string>(cgroups));
        return 1;
    }
    prepare_work_dir(opts.work_dir);
    try {
        agent.files.emplace(opts.file_cache, opts.limits.file_cache_size);
    } catch (const std::exception& e) {
        log("{}", e.what());
        return 1;
    }

    asio::local::stream_protocol::acceptor local(io);
    asio::ip::tcp::acceptor network(io);
    try {
        bind_local_socket(local, opts.socket_path, !opts.local_users.empty());
        asio::ip::tcp::endpoint where(asio::ip::make_address(opts.listen.host), opts.listen.port);
        network.open(where.protocol());
        network.set_option(asio::socket_base::reuse_address(true));
        network.bind(where);
        network.listen();
    } catch (const std::exception& e) {
        log("cannot listen: {}", e.what());
        return 1;
    }

    asio::co_spawn(io, accept_loop(agent, local, serve_local, opts.socket_path), asio::detached);
    asio::co_spawn(io, accept_loop(agent, network, serve_peer, opts.listen.to_string()), asio::detached);
    asio::signal_set stop(io, SIGINT, SIGTERM);
    stop.async_wait([&](std::error_code, int signal) {
        log("stopping on signal {}; children keep running", signal);
        local.close();
        network.close();
        io.stop();
    });

    log("listening on {} and {} (CRIU {})", opts.listen.to_string(), opts.socket_path, agent.criu);
    if (!opts.secret_file.empty())
        log("agents must prove the secret of {} (TLS 1.3)", opts.secret_file);
    else if (!opts.cert.empty())
        log("agents must show a certificate signed by {} (TLS 1.3); this one names {}, and calls itself {}", opts.ca,
            certificate_names_text(SSL_CTX_get0_certificate(agent.tls->native_handle())), agent.host);
    else
        log("no credentials: on loopback only, agents must prove this host's own secret {} (TLS 1.3); "
            "to fork between machines, give the agents a --secret-file", local_secret_path(opts.socket_path));
    if (agent.cgroups) {
        auto limit = [](std::uint64_t n, std::string_view unit) {
            return n ? fmt::format("{} {}", n, unit) : fmt::format("no limit of {}", unit);
        };
        log("each child runs in a cgroup of its own ({}): {}, {}; at most {} children", agent.cgroups->describe(),
            limit(opts.limits.child_max_pids, "tasks"), limit(opts.limits.child_max_memory, "bytes"),
            opts.limits.max_children);
        if (!agent.cgroups->swap_limited && opts.limits.child_max_memory)
            log("warning: this kernel does not account swap in cgroups (no memory.swap.max or "
                "memory.memsw.limit_in_bytes): a child's memory beyond --child-max-memory may go to swap rather than "
                "meet the OOM killer. Turn swap accounting on (a kernel option), or run without swap");
    } else {
        log("warning: children run without cgroups, unlimited in tasks and memory (--allow-unlimited-children): {}",
            std::get<std::string>(cgroups));
    }
    agent.no_lazy_pages = opts.lazy_pages ? lazy_pages_problem() : "--no-lazy-pages";
    if (opts.lazy_pages && !agent.no_lazy_pages.empty())
        log("note: no lazy pages on this host: {}; children start once all of their memory is here",
            agent.no_lazy_pages);
    if (!run_is_tmpfs())
        log("note: /run is not a tmpfs, so CRIU cannot cache its kernel checks there: every fork "
            "pays for them on both hosts (~15 ms each)");
    if (opts.ready_fd >= 0) {
        [[maybe_unused]] auto n = ::write(opts.ready_fd, "ready\n", 6);
        ::close(opts.ready_fd);
    }
    // Under systemd (Type=notify): started means listening. CRIU and the
    // children's inits never need the manager's socket.
    if (auto problem = notify_service_manager("READY=1"); !problem.empty()) log("note: {}", problem);
    ::unsetenv("NOTIFY_SOCKET");
    io.run();
    std::error_code ignored;
    fs::remove(opts.socket_path, ignored);
    return 0;
}

int run_agent(const options& opts) {
    std::signal(SIGPIPE, SIG_IGN);
    auto io = std::make_unique<asio::io_context>(1);
    agent_state agent{.io = *io, .opts = opts};
    int status = serve(agent);
    // In this order: records only the tables hold go while the io_context
    // their timers use lives; then the io_context, and with it every
    // coroutine still suspended in it, while the state they refer to lives.
    agent.forked = {};
    agent.hosted = {};
    io.reset();
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "ns-init") == 0) return run_ns_init(argc, argv);
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "list") return run_list({args.begin() + 1, args.end()});
    if (!args.empty() && args[0] == "kill") return run_kill({args.begin() + 1, args.end()});
    if (!args.empty() && args[0] == "doctor") return run_doctor({args.begin() + 1, args.end()});
    if (!args.empty() && args[0] == "keygen") {
        std::string error;
        if (args.size() == 2 && args[1] != "--ca") {
            error = write_new_secret(args[1]);
        } else if (args.size() == 3 && args[1] == "--ca") {
            error = make_ca(args[2]);
        } else if (auto host = keygen_host_args(args)) {
            error = make_host_certificate(host->names, host->ca_dir, host->out_dir);
        } else {
            std::fprintf(stderr, "usage: rfork-agent keygen PATH | keygen --ca DIR | "
                                 "keygen --host NAME [--host NAME ...] --ca DIR OUT\n");
            return 2;
        }
        if (!error.empty()) std::fprintf(stderr, "rfork-agent keygen: %s\n", error.c_str());
        return error.empty() ? 0 : 1;
    }
    if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
        std::fputs(usage_text, stdout);
        return 0;
    }
    options_error error;
    auto opts = parse_options(args, error);
    if (!opts) {
        std::fprintf(stderr, "rfork-agent: %s\n", error.what.c_str());
        if (!error.fix.empty()) std::fprintf(stderr, "  fix: %s\n", error.fix.c_str());
        std::fprintf(stderr, "\n%s", usage_text);
        return 2;
    }
    try {
        return run_agent(*opts);
    } catch (const std::exception& e) {
        log("fatal: {}", e.what());
        return 1;
    }
}
