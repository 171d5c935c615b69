#include "service/announce.hpp"

#include "common/host_facts.hpp"
#include "common/events.hpp"
#include "common/log.hpp"
#include "common/service_notify.hpp"
#include "peer/peer_connection.hpp"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace rfork::agent {

namespace {

// Not const: OpenSSL's handle of the context is not.
void announce_credentials(agent_state& agent) {
    const options& opts = agent.opts;
    if (!opts.secret_file.empty())
        log("agents must prove the secret of {} (TLS 1.3)", opts.secret_file);
    else if (!opts.cert.empty())
        log("agents must show a certificate signed by {} (TLS 1.3); this one names {}, and calls itself {}", opts.ca,
            certificate_names_text(SSL_CTX_get0_certificate(agent.tls->native_handle())),
            agent.host);
    else
        log("no credentials: on loopback only, agents must prove this host's own secret {} (TLS 1.3); "
            "to fork between machines, give the agents a --secret-file or certificates (--cert, --key, --ca)",
            local_secret_path(opts.socket_path));
}

void announce_children(const agent_state& agent, const std::string& unlimited) {
    const auto& bounds = agent.opts.limits;
    if (!agent.cgroups) {
        log("warning: children run without cgroups, unlimited in tasks and memory (--allow-unlimited-children): {}",
            unlimited);
        return;
    }
    auto limit = [](std::uint64_t n, std::string_view unit) {
        return n ? fmt::format("{} {}", n, unit) : fmt::format("no limit of {}", unit);
    };
    log("each child runs in a cgroup of its own ({}): {}, {}; at most {} children", agent.cgroups->describe(),
        limit(bounds.child_max_pids, "tasks"), limit(bounds.child_max_memory, "bytes"), bounds.max_children);
    if (!agent.cgroups->swap_limited && bounds.child_max_memory)
        log("warning: this kernel does not account swap in cgroups (no memory.swap.max or "
            "memory.memsw.limit_in_bytes): a child's memory beyond --child-max-memory may go to swap rather than "
            "meet the OOM killer. Turn swap accounting on (a kernel option), or run without swap");
}

}  // namespace

void announce(agent_state& agent, const std::string& unlimited) {
    const options& opts = agent.opts;
    log("listening on {} and {} (CRIU {})", opts.listen.to_string(), opts.socket_path, agent.criu);
    announce_credentials(agent);
    announce_children(agent, unlimited);
    if (opts.lazy_pages && !agent.no_lazy_pages.empty())
        log("note: no lazy pages on this host: {}; children start once all of their memory is here",
            agent.no_lazy_pages);
    if (!run_is_tmpfs())
        log("note: /run is not a tmpfs, so CRIU cannot cache its kernel checks there: every fork "
            "pays for them on both hosts (~15 ms each)");
}

void report_ready(const agent_state& agent) {
    const options& opts = agent.opts;
    emit_event("agent_ready", {{"name", agent.host}, {"socket", opts.socket_path}, {"listen", opts.listen.to_string()},
                               {"criu", agent.criu}});
    if (opts.ready_fd >= 0) {
        [[maybe_unused]] auto n = ::write(opts.ready_fd, "ready\n", 6);
        ::close(opts.ready_fd);
    }
    // CRIU and the children's inits never need the manager's socket.
    if (auto problem = notify_service_manager("READY=1"); !problem.empty()) log("note: {}", problem);
    ::unsetenv("NOTIFY_SOCKET");
}

}  // namespace rfork::agent
