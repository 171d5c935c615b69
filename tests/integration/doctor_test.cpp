// rfork-agent doctor on a test host: the configuration its agent runs with,
// a probe of the other host's agent with the right and a wrong secret, a host
// without credentials (its own secret, loopback only), a port held by
// another program, and a config file others could change.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

// The options `host`'s agent runs with (its command line), but the fds it was given.
std::vector<std::string> agent_options(const test_hosts& hosts, const std::string& host) {
    auto cmdline = read_file("/proc/" + std::to_string(hosts.agent_pid(host)) + "/cmdline");
    std::vector<std::string> args;
    std::istringstream in(cmdline);
    for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
    REQUIRE(args.size() > 1);
    args.erase(args.begin());
    for (const char* fd_option : {"--ready-fd", "--event-fd"}) {
        auto found = std::find(args.begin(), args.end(), fd_option);
        if (found != args.end()) args.erase(found, std::min(found + 2, args.end()));
    }
    return args;
}

// The same options as a config file's lines: "--listen X" becomes "listen X".
std::string as_config(const std::vector<std::string>& args) {
    static const std::set<std::string> flags{"--allow-root", "--no-lazy-pages"};
    std::string text = "# made by doctor_test\n";
    for (std::size_t i = 0; i < args.size(); ++i) {
        text += args[i].substr(2);
        if (!flags.count(args[i])) text += " " + args[++i];
        text += "\n";
    }
    return text;
}

// The agent's environment as it matters to doctor (where CRIU is, say).
std::map<std::string, std::string> agent_environment(const test_hosts& hosts, const std::string& host) {
    std::map<std::string, std::string> env;
    std::istringstream in(read_file("/proc/" + std::to_string(hosts.agent_pid(host)) + "/environ"));
    for (std::string entry; std::getline(in, entry, '\0');)
        if (entry.starts_with("RFORK_")) env[entry.substr(0, entry.find('='))] = entry.substr(entry.find('=') + 1);
    return env;
}

run_result doctor(const test_hosts& hosts, const std::string& host, std::vector<std::string> args) {
    args.insert(args.begin(), {program_path("rfork-agent"), "doctor"});
    return hosts.run(host, args, agent_environment(hosts, host), 120s);
}

// `args` with `option` set to `value`: replaced where it is, or added.
std::vector<std::string> with_option(std::vector<std::string> args, const std::string& option,
                                     const std::string& value) {
    bool found = false;
    for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == option) args[i + 1] = value, found = true;
    if (!found) args.insert(args.end(), {option, value});
    return args;
}

// The line after `line` in `text`: a failure's fix.
std::string line_after(const std::string& text, const std::string& line) {
    auto at = text.find(line + "\n");
    if (at == std::string::npos) return {};
    auto start = at + line.size() + 1;
    return text.substr(start, text.find('\n', start) - start);
}

// Doctor's output when one check failed, the one starting with `prefix`:
// exit 1, that one FAIL line, and a fix after it. Returns the line.
std::string the_one_failure(const run_result& r, const std::string& prefix) {
    CHECK(r.status == 1);
    auto failure = only_line(r.out, prefix);
    CHECK(line_after(r.out, failure).starts_with("  fix: "));
    CHECK(lines_starting_with(r.out, "FAIL ").size() == 1);
    return failure;
}

}  // namespace

TEST_SUITE("integration.doctor") {
    TEST_CASE("doctor passes a host's configuration and probes a peer with the same secret") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        temp_dir dir("doctor");
        auto config = (dir.path / "agent.conf").string();
        std::ofstream(config) << as_config(agent_options(hosts, "a"));
        fs::permissions(config, fs::perms::owner_read | fs::perms::owner_write);
        auto peer = hosts.address("b") + ":7000";

        auto r = doctor(hosts, "a", {"--config", config, "--peer", peer});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(r.status == 0);
        CHECK(r.out.substr(0, r.out.find('\n')).find(config) != std::string::npos);
        CHECK(lines_starting_with(r.out, "FAIL ").empty());
        CHECK(only_line(r.out, "ok   peer " + peer).find("agent 'b'") != std::string::npos);
        // Port 7000 is a's own agent's, which doctor tells from a stranger.
        CHECK(only_line(r.out, "ok   listen address 0.0.0.0:7000").find("rfork-agent") != std::string::npos);
        CHECK(lines_starting_with(r.out, "ok   secret file ").size() == 1);
        CHECK(lines_starting_with(r.out, "ok   criu check").size() == 1);
        CHECK(lines_starting_with(r.out, "ok   cgroups for children: cgroup v").size() == 1);
        // A probe is answered and restores nothing.
        CHECK(hosts.wait_for_events("b", "probe_answered"));
        CHECK(hosts.events("b", "image_receiving").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("doctor fails a peer that holds another secret") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        temp_dir dir("doctor");
        auto other = (dir.path / "other-secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", other}).finish(30s).status == 0);
        auto peer = hosts.address("b") + ":7000";
        auto args = with_option(agent_options(hosts, "a"), "--secret-file", other);
        args.insert(args.end(), {"--peer", peer});

        auto r = doctor(hosts, "a", args);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        auto failure = the_one_failure(r, "FAIL peer " + peer);
        CHECK(failure.find("secret") != std::string::npos);
        CHECK(lines_starting_with(r.out, "ok   credentials load").size() == 1);  // the secret itself is fine
        CHECK(hosts.wait_for_events("b", "peer_refused"));
        CHECK(any_event_with(hosts.events("b", "peer_refused"), "text", "no TLS"));
    }

    TEST_CASE("doctor on a host without credentials names its own secret and probes its agent on loopback") {
        require_fork_environment();
        test_hosts hosts({"a"}, {.no_credentials = true});
        auto r = doctor(hosts, "a", {"--listen", "127.0.0.1:7000", "--peer", "127.0.0.1:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a"}));
        CHECK(r.status == 0);  // a warning: forks between machines need credentials
        CHECK(lines_starting_with(r.out, "FAIL ").empty());
        CHECK(only_line(r.out, "warn credentials: ").find("127.0.0.1:7000 only") != std::string::npos);
        CHECK(lines_starting_with(r.out, "ok   local secret /run/rfork/local.secret").size() == 1);
        CHECK(only_line(r.out, "ok   peer 127.0.0.1:7000").find("agent 'a'") != std::string::npos);

        // A local secret others may read fails, with the fix.
        temp_dir dir("doctor");
        auto secret = (dir.path / "local.secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", secret}).finish(30s).status == 0);
        fs::permissions(secret, fs::perms::group_read, fs::perm_options::add);
        auto bad = doctor(hosts, "a", {"--listen", "127.0.0.1:7001", "--socket", (dir.path / "agent.sock").string()});
        INFO("stdout: " << bad.out << "\nstderr: " << bad.err);
        auto failure = the_one_failure(bad, "FAIL local secret " + secret);
        CHECK(line_after(bad.out, failure).starts_with("  fix: rm " + secret));

        // Another local secret than the agent's: its TLS fails, and doctor
        // says why in terms of credentials, not of certificates.
        temp_dir other("doctor");
        auto own = (other.path / "local.secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", own}).finish(30s).status == 0);
        auto apart = doctor(hosts, "a", {"--listen", "127.0.0.1:7002", "--socket", (other.path / "agent.sock").string(),
                                         "--peer", "127.0.0.1:7000"});
        INFO("stdout: " << apart.out << "\nstderr: " << apart.err);
        auto refused = the_one_failure(apart, "FAIL peer 127.0.0.1:7000");
        CHECK(refused.find("without credentials") != std::string::npos);
        CHECK(refused.find(own) != std::string::npos);
        CHECK(refused.find("certificate") == std::string::npos);
    }

    TEST_CASE("doctor fails a listen port that another program holds") {
        require_fork_environment();
        test_hosts hosts({"a"});
        temp_dir dir("doctor");
        auto status = (dir.path / "status").string();
        std::ofstream{status};  // watched from the start
        auto holder = hosts.start("a", {program_path("hold_port"), "7300", status});
        REQUIRE(wait_for_file(
            status, [](const std::string& s) { return s.find("listening") != std::string::npos; }, 30s));

        auto r = doctor(hosts, "a", with_option(agent_options(hosts, "a"), "--listen", "0.0.0.0:7300"));
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        auto failure = the_one_failure(r, "FAIL listen address 0.0.0.0:7300");
        CHECK(failure.find("7300") != std::string::npos);
    }

    TEST_CASE("doctor and the agent refuse a config file that group or others may write") {
        require_fork_environment();
        temp_dir dir("doctor");
        auto config = (dir.path / "agent.conf").string();
        std::ofstream(config) << "listen 7999\n";
        fs::permissions(config, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_write);

        auto r = running_program({program_path("rfork-agent"), "doctor", "--config", config}).finish(60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(r.status == 2);
        auto failure = only_line(r.out, "FAIL configuration: " + config);
        CHECK(line_after(r.out, failure) == "  fix: chmod go-w " + config);
        CHECK(lines_starting_with(r.out, "ok   ").empty());  // nothing checked with options it cannot trust

        auto agent = running_program({program_path("rfork-agent"), "--config", config}).finish(30s);
        INFO("agent stderr: " << agent.err);
        CHECK(agent.status == 2);
        CHECK(agent.err.find("chmod go-w " + config) != std::string::npos);
    }

    TEST_CASE("doctor names a read-only /proc/sys (as containers mount it) as why criu check fails") {
        require_fork_environment();
        test_hosts hosts({"a"});
        // On host a, in a mount namespace of its own whose /proc/sys is read-only.
        std::vector<std::string> args{"unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
                                      "exec \"$@\"",
                                      "sh", program_path("rfork-agent"), "doctor"};
        for (auto& arg : agent_options(hosts, "a")) args.push_back(arg);
        auto r = hosts.run("a", args, agent_environment(hosts, "a"), 120s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        auto failure = the_one_failure(r, "FAIL criu check: ");
        CHECK(failure.find("Read-only file system") != std::string::npos);
        CHECK(line_after(r.out, failure).starts_with("  fix: CRIU needs a writable /proc/sys"));
    }
}
