// Doctor's checks of CRIU, and of the kernel features the agent needs, asked
// of CRIU itself where it has a check for them (`criu check --feature`).
#include "doctor/doctor_checks.hpp"

#include "criu/criu.hpp"
#include "common/process.hpp"

#include <fmt/core.h>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace rfork::agent {

namespace {

using namespace std::chrono_literals;

// RFORK_CRIU_MINIMUM, as the build has it (the one number CMake and setup share).
constexpr std::array<unsigned, 3> parse_version(std::string_view text) {
    std::array<unsigned, 3> parts{};
    std::size_t i = 0;
    for (char c : text) {
        if (c == '.') {
            if (++i == parts.size()) break;
        } else {
            parts[i] = parts[i] * 10 + static_cast<unsigned>(c - '0');
        }
    }
    return parts;
}
constexpr std::array<unsigned, 3> minimum_version = parse_version(RFORK_CRIU_MINIMUM);
constexpr auto criu_bound = 60s;  // a `criu check` probes the kernel: a second or two

struct command_output {
    int status = -1;  // exit code, or 128 + signal; -1: still running after the bound (killed)
    std::string text;  // stdout and stderr together
};

// Runs argv with stdout and stderr captured, for at most `bound`.
command_output run_bounded(const std::vector<std::string>& argv, std::chrono::milliseconds bound) {
    auto out = make_pipe();
    auto child = spawn(argv, {{out.write.get(), 1}, {out.write.get(), 2}});
    out.write.reset();
    command_output result;
    auto deadline = std::chrono::steady_clock::now() + bound;
    auto left = [&] {
        return std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                     deadline - std::chrono::steady_clock::now()).count());
    };
    auto give_up = [&] {
        ::kill(child.pid, SIGKILL);
        ::waitpid(child.pid, nullptr, 0);
        return result;
    };
    for (;;) {
        pollfd p{out.read.get(), POLLIN, 0};
        int ready = ::poll(&p, 1, static_cast<int>(left()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return give_up();
        char buffer[4096];
        auto n = ::read(out.read.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (result.text.size() < (1u << 20)) result.text.append(buffer, static_cast<std::size_t>(n));
    }
    // Its output ended; its exit is bounded by the same deadline.
    pollfd exited{child.pidfd.get(), POLLIN, 0};
    while (::poll(&exited, 1, static_cast<int>(left())) < 0 && errno == EINTR) {
    }
    if (!(exited.revents & POLLIN)) return give_up();
    int status = 0;
    while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.status = shell_status(status);
    return result;
}

// The line of CRIU's output that says why it failed: its last error, or its last word.
std::string last_error(const std::string& output) {
    std::istringstream in(output);
    std::string error, last;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line.starts_with("Does not look good")) continue;
        last = line;
        if (line.find("Error") != std::string::npos) error = line;
    }
    auto chosen = error.empty() ? last : error;
    return chosen.empty() ? "it said nothing" : chosen;
}

std::string install_criu_fix() {
    return fmt::format("install CRIU {}.{}.{} or later (scripts/setup builds one) on PATH or as "
                       "<agent dir>/../libexec/rfork/criu, or name it: criu PATH",
                       minimum_version[0], minimum_version[1], minimum_version[2]);
}

// `criu check --feature NAME`: prints "NAME is supported" and succeeds, or says why not.
check_result feature(const std::string& criu, const std::string& name, const std::string& what,
                     check_status missing, const std::string& why_needed, const std::string& fix) {
    command_output out;
    try {
        out = run_bounded({criu, "check", "--feature", name}, criu_bound);
    } catch (const std::exception& e) {
        return failed(what, fmt::format("cannot run {}: {}", criu, e.what()), install_criu_fix());
    }
    if (out.status == 0) return passed(what, fmt::format("criu check --feature {}", name));
    auto why = out.status < 0 ? fmt::format("criu check --feature {} did not finish", name)
                              : fmt::format("criu check --feature {}: {}", name, last_error(out.text));
    return {missing, what, why + "; " + why_needed, fix};
}

}  // namespace

check_result check_criu_found(const options& opts, const std::string& self_exe, std::string& criu) {
    criu = find_criu(opts.criu, self_exe);
    if (!criu.empty()) return passed("CRIU found", criu);
    const char* env = std::getenv("RFORK_CRIU");
    std::string why = !opts.criu.empty()  ? fmt::format("no executable at {} (criu)", opts.criu)
                      : env && *env       ? fmt::format("no executable at {} ($RFORK_CRIU)", env)
                                          : "none beside the agent (../libexec/rfork/criu) or on PATH";
    return failed("CRIU found", why, install_criu_fix());
}

check_result check_criu_version(const std::string& criu) {
    const char* what = "CRIU version";
    command_output out;
    try {
        out = run_bounded({criu, "--version"}, 10s);
    } catch (const std::exception& e) {
        return failed(what, fmt::format("cannot run {}: {}", criu, e.what()), install_criu_fix());
    }
    // "Version: 4.2.1", maybe "Version: 4.2" (a missing part is 0).
    auto at = out.text.find("Version: ");
    std::array<unsigned, 3> version{};
    std::string shown;
    if (out.status == 0 && at != std::string::npos) {
        const char* p = out.text.data() + at + 9;
        const char* end = out.text.data() + out.text.size();
        shown.assign(p, std::find_if(p, end, [](char c) { return c == '\n' || c == ' '; }));
        for (std::size_t i = 0; i < version.size() && p < end; ++i) {
            auto [next, ec] = std::from_chars(p, end, version[i]);
            if (ec != std::errc{}) break;
            p = next;
            if (p == end || *p != '.') break;
            ++p;
        }
    }
    if (shown.empty() || version[0] == 0)
        return failed(what, fmt::format("{} --version did not say its version: {}", criu, last_error(out.text)),
                      install_criu_fix());
    if (version < minimum_version)
        return failed(what,
                      fmt::format("{}, older than {}.{}.{}, which rfork needs (older ones cannot checkpoint TCP or "
                                  "UDP sockets on kernels 6.16 and later)",
                                  shown, minimum_version[0], minimum_version[1], minimum_version[2]),
                      install_criu_fix());
    return passed(what, shown);
}

check_result check_criu_check(const std::string& criu) {
    const char* what = "criu check";
    command_output out;
    try {
        out = run_bounded({criu, "check"}, criu_bound);
    } catch (const std::exception& e) {
        return failed(what, fmt::format("cannot run {}: {}", criu, e.what()), install_criu_fix());
    }
    if (out.status == 0 && out.text.find("Looks good") != std::string::npos) return passed(what, "Looks good.");
    auto why = out.status < 0 ? fmt::format("it did not finish within {} s", criu_bound.count()) : last_error(out.text);
    // Seen under systemd-nspawn, which mounts /proc/sys read-only.
    if (why.find("/proc/sys") != std::string::npos || why.find("Read-only file system") != std::string::npos)
        return failed(what, why,
                      "CRIU needs a writable /proc/sys: containers often mount it read-only; run the agent on the "
                      "host, or give its container a writable /proc/sys");
    return failed(what, why,
                  fmt::format("{} check -v4 shows CRIU's details; it needs root and a kernel built with "
                              "CONFIG_CHECKPOINT_RESTORE (https://criu.org/Installation)",
                              criu));
}

check_result check_userfaultfd(const std::string& criu) {
    return feature(criu, "uffd-noncoop", "kernel: userfaultfd (lazy pages)", check_status::fail,
                   "children of large single-threaded programs cannot start before their memory arrives",
                   "a kernel with userfaultfd (CONFIG_USERFAULTFD), or no-lazy-pages on every agent");
}

check_result check_clone3_set_tid(const std::string& criu) {
    // Without it CRIU sets pids through /proc/sys/kernel/ns_last_pid: slower, still correct.
    return feature(criu, "clone3_set_tid", "kernel: clone3 with set_tid", check_status::warn,
                   "CRIU falls back to ns_last_pid to restore pids", "a Linux kernel of 5.5 or later");
}

check_result check_network_lock(const std::string& criu) {
    return feature(criu, "network_lock_nftables", "kernel: nftables network lock (TCP connections)",
                   check_status::fail,
                   "programs with established TCP connections cannot be forked (CRIU holds their packets "
                   "with nftables while it dumps them)",
                   "a kernel with nftables and its set concatenation (CONFIG_NF_TABLES), and a CRIU built "
                   "with libnftables (scripts/setup builds one)");
}

check_result check_lazy_pages(const options& opts) {
    const char* what = "lazy pages";
    if (!opts.lazy_pages)
        return warned(what,
                      "off here (no-lazy-pages): an agent that sends lazy pages cannot fork a large "
                      "single-threaded program to this host",
                      "no-lazy-pages on every agent, or on none");
    if (auto problem = lazy_pages_problem(); !problem.empty())
        return failed(what, problem,
                      "sysctl -w fs.pipe-max-size=4194304, and to keep it: "
                      "echo fs.pipe-max-size=4194304 > /etc/sysctl.d/60-rfork.conf");
    return passed(what, "userfaultfd and CRIU's 3.2 MiB pipes work");
}

}  // namespace rfork::agent
