// rfork-agent doctor: the configuration the agent would run with, checked on
// this host (and with --peer, against other agents), one line per check.
#include "doctor/doctor.hpp"

#include "common/config.hpp"
#include "doctor/doctor_checks.hpp"
#include "common/options.hpp"

#include <fmt/core.h>

#include <cstdio>
#include <filesystem>

namespace rfork::agent {

namespace {

namespace fs = std::filesystem;

constexpr const char* doctor_usage =
    "usage: rfork-agent doctor [agent options | --config FILE] [--peer HOST:PORT ...]\n"
    "\n"
    "Checks what a first deployment fails on: root, CRIU and the kernel features it\n"
    "needs, lazy pages, /run, the credentials, the listen address, the directories,\n"
    "and with --peer a whole connection to that agent with these credentials. It\n"
    "takes the agent's own options (--listen may be left out); with none, those of\n"
    "/etc/rfork/agent.conf when it exists. Exit status: 0 when nothing failed, 1\n"
    "when something did, 2 for arguments it cannot use.\n";

struct tally {
    unsigned checks = 0, failures = 0, warnings = 0;
};

// Text for the operator's terminal: part of it comes from the peer (its name,
// its errors), so no control character gets through, and none runs on.
std::string printable(std::string_view text) {
    constexpr std::size_t most = 400;
    std::string out;
    for (char c : text.substr(0, most)) out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c;
    if (text.size() > most) out += "...";
    return out;
}

// The one place results are printed: "ok   what", "warn what: why", "FAIL what: why", then "  fix: ...".
void print(const check_result& r, tally& count) {
    ++count.checks;
    const char* word = r.status == check_status::ok ? "ok  " : r.status == check_status::warn ? "warn" : "FAIL";
    if (r.status == check_status::fail) ++count.failures;
    if (r.status == check_status::warn) ++count.warnings;
    fmt::print("{} {}{}\n", word, printable(r.what), r.why.empty() ? "" : ": " + printable(r.why));
    if (r.status != check_status::ok && !r.fix.empty()) fmt::print("  fix: {}\n", printable(r.fix));
    std::fflush(stdout);
}

// This host's checks, in the order an operator would fix them; `tls` gets
// the agent's credentials when they load.
void check_this_host(const options& opts, std::optional<asio::ssl::context>& tls, tally& count) {
    std::error_code ignored;
    auto self_exe = fs::read_symlink("/proc/self/exe", ignored).string();
    auto root = check_root();
    print(root, count);

    // The kernel's checks need root: without it they would only say so again.
    bool as_root = root.status == check_status::ok;
    std::string criu;
    print(check_criu_found(opts, self_exe, criu), count);
    bool ask_criu = !criu.empty() && as_root;
    if (!criu.empty()) print(check_criu_version(criu), count);
    if (ask_criu) print(check_criu_check(criu), count);
    print(check_pidfd(), count);
    bool userfaultfd = true;
    if (ask_criu) {
        if (opts.lazy_pages) {
            auto r = check_userfaultfd(criu);
            userfaultfd = r.status == check_status::ok;
            print(r, count);
        }
        print(check_clone3_set_tid(criu), count);
        print(check_network_lock(criu), count);
    }
    // Without userfaultfd its own check said all there is to say about lazy pages.
    if (!opts.lazy_pages || (as_root && userfaultfd)) print(check_lazy_pages(opts), count);
    print(check_run_tmpfs(), count);
    print(check_child_cgroups(opts), count);

    for (auto& r : check_credentials(opts, tls)) print(r, count);
    print(check_listen(opts), count);
    print(check_directory("work dir", opts.work_dir, "work-dir DIR"), count);
    print(check_directory("local socket's directory", fs::path(opts.socket_path).parent_path().string(),
                          "socket PATH"),
          count);
}

// Each --peer, through a whole connection with this agent's credentials (`tls`).
void check_peers(const options& opts, const std::vector<endpoint>& peers, asio::ssl::context* tls, tally& count) {
    bool credentials = !opts.secret_file.empty() || !opts.cert.empty();
    for (auto& peer : peers) {
        if (credentials && !tls) {
            print(failed(fmt::format("peer {}", peer.to_string()), "not tried: this agent's credentials do not load",
                         "fix the credentials first (above)"),
                  count);
            continue;
        }
        print(check_peer(opts, tls, peer), count);
    }
}

}  // namespace

int run_doctor(const std::vector<std::string>& args) {
    std::vector<std::string> agent_args;
    std::vector<endpoint> peers;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--help" || args[i] == "-h") {
            std::fputs(doctor_usage, stdout);
            return 0;
        }
        if (args[i] != "--peer") {
            agent_args.push_back(args[i]);
            continue;
        }
        bool given = i + 1 < args.size();
        auto peer = given ? endpoint::parse(args[++i]) : std::nullopt;
        if (!peer) {
            fmt::print(stderr, "rfork-agent doctor: --peer takes HOST:PORT{}\n\n{}",
                       given ? ", not '" + args[i] + "'" : "", doctor_usage);
            return 2;
        }
        peers.push_back(*peer);
    }

    std::string source = "the options given";
    for (std::size_t i = 0; i + 1 < agent_args.size(); ++i)
        if (agent_args[i] == "--config")
            source += (source.ends_with("given") ? ", with " : " and ") + agent_args[i + 1];
    std::error_code ignored;
    if (agent_args.empty() && fs::exists(default_config_file, ignored)) {
        agent_args = {"--config", default_config_file};
        source = fmt::format("the configuration in {}", default_config_file);
    } else if (agent_args.empty()) {
        source = fmt::format("the agent's defaults (no options, and no {})", default_config_file);
    }
    fmt::print("rfork-agent doctor: checking {}\n", source);

    tally count;
    options_error error;
    auto parsed = parse_options(agent_args, error, false);
    if (!parsed) {
        print(failed("configuration", error.what,
                     error.fix.empty() ? "correct it (rfork-agent --help lists the options)" : error.fix),
              count);
        return 2;
    }
    const options& opts = *parsed;
    std::optional<asio::ssl::context> tls;
    check_this_host(opts, tls, count);
    check_peers(opts, peers, tls ? &*tls : nullptr, count);

    auto warnings = count.warnings == 0 ? std::string{}
                    : fmt::format(", {} warning{}", count.warnings, count.warnings == 1 ? "" : "s");
    if (count.failures == 0)
        fmt::print("rfork-agent doctor: {} checks, none failed{}\n", count.checks, warnings);
    else
        fmt::print("rfork-agent doctor: {} of {} checks failed{}\n", count.failures, count.checks, warnings);
    return count.failures == 0 ? 0 : 1;
}

}  // namespace rfork::agent
