// Test hosts for the integration tests: network namespaces joined by a bridge,
// each with its own rfork-agent and its own /run/rfork (see scripts/hosts),
// and programs run on them with their output captured.
#pragma once

#include <rfork/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace rfork::test {

using namespace std::chrono_literals;

// Skips the calling test (exit 77, which CTest reports as skipped) when this
// machine cannot run real forks: not root, no CRIU, no ip(8). Under CI=true it
// fails instead, so CI always runs them.
void require_fork_environment();

// The installed agent's root that CTest makes once per run (the fixture in
// CMakeLists.txt, named by RFORK_TEST_AGENT_ROOT): a fresh Debian root with
// the rfork-agent package alone. Without it the calling test is skipped, as
// by require_fork_environment (under CI=true it fails).
std::filesystem::path installed_agent_root();

// A program's result: its exit code (or 128 + signal) and what it printed.
struct run_result {
    int status = -1;  // -1: still running when the bound ran out (it was killed)
    std::string out;
    std::string err;
};

// A program started in the background; finish() waits for it, bounded.
class running_program {
public:
    // With `terminal`, the program runs in a session of its own whose
    // controlling terminal is a new pseudo-terminal, on stdin, stdout and
    // stderr, as from an interactive shell; its output arrives in `out`.
    // With `stdin_fd`, its stdin is that fd (the caller's stays the caller's) instead of /dev/null.
    running_program(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
                    bool terminal = false, int stdin_fd = -1);
    running_program(running_program&&) noexcept;
    running_program& operator=(running_program&&) = delete;
    ~running_program();
    run_result finish(std::chrono::milliseconds bound = 60s);
    // Kills it and reaps it at once, not waiting for its output to end (an
    // agent may hold its stdout): its pid is free when this returns.
    void kill_now();
    int pid() const { return pid_; }

private:
    int pid_ = -1, pidfd_ = -1, out_ = -1, err_ = -1;
};

// One event of an agent (agent/common/events.hpp): its name and its fields,
// numbers as their text.
struct agent_event {
    std::string name;
    std::map<std::string, std::string> fields;

    // The field's value, or "" if the event has no such field.
    std::string operator[](const std::string& key) const {
        auto found = fields.find(key);
        return found == fields.end() ? std::string{} : found->second;
    }
};

class test_hosts {
public:
    struct setup {
        // Extra arguments for the agents (RFORK_AGENT_ARGS of scripts/hosts;
        // an entry "b=ARGS" for host b only).
        std::vector<std::string> agent_args{};
        bool certificates = false;  // certificates of one authority instead of the secret
        // No credentials at all: each agent listens on its own 127.0.0.1 only,
        // with the secret it makes for its host (/run/rfork/local.secret).
        bool no_credentials = false;
        bool allow_root = true;   // the agents restore root's processes (--allow-root)
        // Hosts of their own files, as separate machines: each one's root is
        // an overlay of installed_agent_root() that only it writes, and its
        // agent is the installed one, with the same arguments and credentials
        // as the others (scripts/hosts: RFORK_HOSTS_OVERLAY_<host>).
        std::vector<std::string> own_files{};
    };
    explicit test_hosts(std::vector<std::string> names) : test_hosts(std::move(names), setup{}) {}
    test_hosts(std::vector<std::string> names, const setup& how);
    ~test_hosts();
    test_hosts(const test_hosts&) = delete;
    test_hosts& operator=(const test_hosts&) = delete;

    // Starts argv (argv[0] a path) on `host`.
    running_program start(const std::string& host, const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& env = {}, bool terminal = false,
                          int stdin_fd = -1) const;
    run_result run(const std::string& host, const std::vector<std::string>& argv,
                   const std::map<std::string, std::string>& env = {}, std::chrono::milliseconds bound = 60s) const;

    // The root of `host` as this process sees it, to put a file there for
    // that host alone or to check that one is absent there; empty for a
    // host that shares this machine's files. (Its /tmp and /run are its own
    // tmpfs, which this does not show.)
    std::filesystem::path root_of(const std::string& host) const;
    // The rfork-agent program as `host` sees it: the installed one on a host of its own files.
    std::string agent_program(const std::string& host) const;

    std::string address(const std::string& host) const;
    int agent_pid(const std::string& host) const;
    std::string agent_stdout(const std::string& host) const;  // children's output
    std::string agent_log(const std::string& host) const;     // the agent's own log (stderr)


    // `host`'s agent's events (--event-fd), all of them or those named `name`.
    std::vector<agent_event> events(const std::string& host, const std::string& name = {}) const;
    // Waits until `host`'s agent has had `count` events named `name` or more;
    // false when `bound` ran out.
    bool wait_for_events(const std::string& host, const std::string& name, std::size_t count = 1,
                         std::chrono::milliseconds bound = 30s) const;
    // Waits until `host`'s agent's events (all of them) satisfy `done`.
    bool wait_for_events(const std::string& host, const std::function<bool(const std::vector<agent_event>&)>& done,
                         std::chrono::milliseconds bound = 30s) const;

    // Takes `host`'s network link down (or up again): the cable pulled.
    void set_link(const std::string& host, bool up) const;

    // Entries left in the agent's work directory (as that host sees it).
    std::vector<std::string> work_dir_entries(const std::string& host) const;
    // The agent's open fds, counted after a request of its own (rfork-agent
    // list) has been answered: whatever it finished before is closed by then.
    std::size_t agent_fds(const std::string& host) const;

    // Processes in `host`'s network namespace other than its agent.
    std::vector<int> processes_besides_agent(const std::string& host) const;

    // Runs `open` with this thread in `host`'s network namespace: the sockets
    // it opens stay there (and reach what that host reaches) once it is back.
    void in_network(const std::string& host, const std::function<void()>& open) const;

    // The secret the agents share (empty with certificates or no_credentials).
    std::string secret_file() const;

    // Speaks to the agent at `address`:`port` from `from`'s network as the
    // program raw_peer MODE does, but inside TLS with `secret` (a secret
    // file, by default the hosts' own), and reports the same lines; only
    // "connect failed: WHY" or "tls failed: WHY" when it got no further.
    // Modes: garbage, version, role, truncated, silent, stall; origin=NAME:
    // the start of an image from NAME, then the end of the stream; big_file:
    // an image whose mm-1.img is announced one byte over its cap; and
    // trickle: the start of an image, then one byte of it every 200 ms.
    // Status -1: the agent had not closed within `bound`.
    run_result raw_tls_peer(const std::string& from, const std::string& address, std::uint16_t port,
                            const std::string& mode, std::string secret = {},
                            std::chrono::milliseconds bound = 30s) const;
    // The same with a certificate and its key instead of a secret, as an
    // agent with certificates speaks; the agent's is checked against `ca`.
    run_result raw_tls_peer_with_certificate(const std::string& from, const std::string& address, std::uint16_t port,
                                             const std::string& mode, const std::string& cert, const std::string& key,
                                             const std::string& ca, std::chrono::milliseconds bound = 30s) const;

private:
    run_result raw_tls_exchange(const std::string& from, const std::string& address, std::uint16_t port,
                                const std::string& mode, ssl_ctx_st* ctx, const std::vector<unsigned char>* secret,
                                std::chrono::milliseconds bound) const;

    std::string state_;
    std::vector<std::string> names_;
};

// After a test: each host in `ended` saw exactly that many children end (a
// bounded wait; a host of `names` not in it, none), and every host in `names`
// keeps nothing of them: an empty work directory, no process besides its
// agent, no child cgroup.
void check_nothing_left(const test_hosts& hosts, const std::vector<std::string>& names,
                        const std::map<std::string, std::size_t>& ended);

// The directory, as this machine mounts its cgroups, of the cgroup that
// `proc_cgroup` (the text of a /proc/PID/cgroup) names for `controller`
// ("pids", "memory"): on cgroup v2 the one cgroup, on v1 that controller's.
// Empty if it names none.
std::string cgroup_directory(const std::string& proc_cgroup, const std::string& controller);

// Cgroups of children (rfork-child-*) under `host`'s agent's cgroups.
std::vector<std::string> child_cgroups(const test_hosts& hosts, const std::string& host);

// The events of an agent's event log (JSON lines of flat objects); a line
// that is not such an object fails the test.
std::vector<agent_event> parse_events(const std::string& text);

// Whether one of `events` has a field `key` that contains `needle`.
bool any_event_with(const std::vector<agent_event>& events, const std::string& key, const std::string& needle);

// The agent logs of the hosts in `names`, for a test's INFO.
std::string agent_logs(const test_hosts& hosts, const std::vector<std::string>& names);

// Waits until the file's content satisfies `done` (inotify, no polling).
bool wait_for_file(const std::string& path, const std::function<bool(const std::string&)>& done,
                   std::chrono::milliseconds bound);

std::string read_file(const std::string& path);

// A new directory under /tmp (which every test host sees but those of their
// own files), removed with all it holds at the end of the test.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(const std::string& name);
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

// Open descriptors of a process.
std::size_t fd_count(int pid);

// An rfork error code as fork_or_report prints it.
std::string error_value(rfork::errc e);

// fork_or_report's output after a failed fork: exactly one error line, in
// rfork's category with the `expected` code, and then the parent went on.
// Returns that line, for checks of its message.
std::string expect_failed_fork(const run_result& r, rfork::errc expected);

// The bytes of a secret file, as the agents read it.
std::vector<unsigned char> read_secret_bytes(const std::string& path);

// Lines of `text` that contain `needle`.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle);

// Lines of `text` that start with `prefix`.
std::vector<std::string> lines_starting_with(const std::string& text, const std::string& prefix);
// The one line of `text` that starts with `prefix` (a test failure otherwise).
std::string only_line(const std::string& text, const std::string& prefix);

// The value of "key=value" in a line of space-separated fields.
std::string field(const std::string& line, const std::string& key);

// A program the tests run, by name: programs/NAME.cpp, "silly" or "rfork-agent".
std::string program_path(const std::string& name);

}  // namespace rfork::test
