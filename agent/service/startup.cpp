#include "service/startup.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/remove_tree.hpp"
#include "criu/criu.hpp"
#include "peer/peer_connection.hpp"
#include "receive/child_cgroup.hpp"

#include <unistd.h>

#include <filesystem>
#include <variant>

namespace rfork::agent {

namespace fs = std::filesystem;

namespace {

// Where events go (--event-fd, --event-log): first, so that nothing the
// agent does goes unrecorded.
bool open_events(const options& opts) {
    if (auto ec = opts.event_fd >= 0 ? adopt_event_fd(opts.event_fd) : std::error_code{}) {
        log("cannot write events to fd {} (--event-fd): {}", opts.event_fd, ec.message());
        return false;
    }
    if (auto ec = opts.event_log.empty() ? std::error_code{} : open_event_log(opts.event_log)) {
        log("cannot write events to {} (--event-log): {}", opts.event_log, ec.message());
        return false;
    }
    return true;
}

// Checked before anything is made (the local secret, the work dir).
bool find_own_criu(agent_state& agent) {
    agent.self_exe = fs::read_symlink("/proc/self/exe").string();
    agent.criu = find_criu(agent.opts.criu, agent.self_exe);
    if (!agent.criu.empty()) return true;
    log("no usable CRIU binary{} (an executable ELF file): run scripts/setup, or pass --criu PATH",
        agent.opts.criu.empty() ? "" : " at " + agent.opts.criu);
    return false;
}

// Every connection between agents is authenticated, loopback included:
// without credentials, by a secret only this host's root can read.
bool make_credentials(agent_state& agent) {
    const options& opts = agent.opts;
    try {
        if (!opts.secret_file.empty()) agent.tls.emplace(make_tls_context(opts.secret_file));
        else if (!opts.cert.empty()) agent.tls.emplace(make_tls_context(opts.cert, opts.key, opts.ca));
        else agent.tls.emplace(make_local_tls_context(local_secret_path(opts.socket_path)));
        return true;
    } catch (const std::exception& e) {
        log("{}", e.what());
        return false;
    }
}

// With certificates, the name this agent tells its peers (the origin of its
// forks) must be one its certificate holds, or they refuse its images:
// --name, by default the certificate's first name. Returns why not, or empty.
std::string name_from_certificate(agent_state& agent) {
    const options& opts = agent.opts;
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

// --name; with certificates, one of theirs; else the host name.
bool settle_host_name(agent_state& agent) {
    agent.host = agent.opts.name;
    if (!agent.opts.cert.empty()) {
        if (auto wrong = name_from_certificate(agent); !wrong.empty()) {
            log("{}", wrong);
            return false;
        }
    }
    if (agent.host.empty()) {
        char name[256] = {};
        ::gethostname(name, sizeof name - 1);
        agent.host = name;
    }
    set_log_name(agent.host);
    return true;
}

// Once its options are known good, before anything is spawned: on cgroup v2
// the agent moves into a leaf of its own.
bool give_children_cgroups(agent_state& agent, std::string& unlimited) {
    auto cgroups = prepare_cgroup_parent();
    if (auto* parent = std::get_if<cgroup_parent>(&cgroups)) {
        agent.cgroups = *parent;
        return true;
    }
    unlimited = std::get<std::string>(cgroups);
    if (agent.opts.allow_unlimited_children) return true;
    log("cannot give children cgroups of their own: {}. Without them a child could take every pid and all "
        "the memory of this host, so the agent does not start. Mount the cgroup v2 hierarchy with the pids "
        "and memory controllers (under systemd: Delegate=pids memory in rfork-agent.service), or accept children "
        "without limits: --allow-unlimited-children",
        unlimited);
    return false;
}

bool open_file_cache(agent_state& agent) {
    try {
        agent.files.emplace(agent.opts.file_cache, agent.opts.limits.file_cache_size);
        return true;
    } catch (const std::exception& e) {
        log("{}", e.what());
        return false;
    }
}

}  // namespace

void prepare_work_dir(const std::string& dir) {
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms::owner_all);
    for (auto& entry : fs::directory_iterator(dir)) remove_tree(entry.path());
}

bool prepare_agent(agent_state& agent, std::string& unlimited) {
    if (!open_events(agent.opts) || !find_own_criu(agent) || !make_credentials(agent) || !settle_host_name(agent) ||
        !give_children_cgroups(agent, unlimited))
        return false;
    prepare_work_dir(agent.opts.work_dir);
    if (!open_file_cache(agent)) return false;
    agent.no_lazy_pages = agent.opts.lazy_pages ? lazy_pages_problem() : "--no-lazy-pages";
    return true;
}

}  // namespace rfork::agent
