// A program of a user other than root forks, and nothing on either host does
// its work as root: its agent has CRIU checkpoint it as that user, the other
// agent has CRIU restore it as that user, in a pid namespace whose init is
// that user's too, and the child holds no capability.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

constexpr const char* nobody = "65534";  // in every Debian's passwd, with the group nogroup
constexpr const char* no_capabilities = "0000000000000000";

// A copy of a test program that the user may run, in a folder it may enter
// (the build tree may be root's alone, as under /root).
std::string runnable_copy(const temp_dir& dir, const std::string& name) {
    auto copy = dir.path / name;
    fs::copy_file(program_path(name), copy);
    fs::permissions(dir.path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    return copy.string();
}

// argv run as uid and gid 65534 without other groups, from `dir`.
std::vector<std::string> as_nobody(const temp_dir& dir, std::vector<std::string> argv) {
    std::vector<std::string> all{"/usr/bin/env", "-C", dir.path.string(), "/usr/bin/setpriv",
                                 std::string("--reuid=") + nobody, std::string("--regid=") + nobody,
                                 "--clear-groups", "--"};
    all.insert(all.end(), argv.begin(), argv.end());
    return all;
}

}  // namespace

TEST_SUITE("integration.unprivileged") {
    TEST_CASE("a user's program forks and CRIU on both hosts works as that user") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {std::string("a=--local-users ") + nobody,
                                                     std::string("b=--allow-uid ") + nobody}});
        temp_dir dir("unprivileged");
        auto probe = runnable_copy(dir, "identity_probe");
        // 64 MiB would follow a root's child (lazy pages); a user's goes whole,
        // as CRIU restores lazy pages only as root.
        for (std::string mib : {"1", "64"}) {
            CAPTURE(mib);
            auto r = hosts.run("a", as_nobody(dir, {probe, "b:7000", mib}));
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            REQUIRE(r.status == 0);
            auto parent = only_line(r.out, "parent id=");
            auto child = only_line(r.out, "child id=");
            CHECK(field(child, "sum") == field(parent, "sum"));
            CHECK(field(parent, "uid") == nobody);
            // The child runs as the user, with the ids it had, and no capability.
            CHECK(field(child, "uid") == nobody);
            CHECK(field(child, "gid") == nobody);
            CHECK(field(child, "groups") == "none");
            for (auto set : {"prm", "eff", "amb"}) {
                CAPTURE(set);
                CHECK(field(child, set) == no_capabilities);
                // Nothing in its namespace is root's: its init, which ran
                // CRIU, took the user's identity and dropped every capability.
                CHECK(field(child, std::string("init_") + set) == no_capabilities);
            }
            CHECK(field(child, "init_uid") == nobody);
        }
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("a user's image that opens a file its user may not open so is refused by the kernel") {
        // The image names a file to open for writing that its user may only
        // read (as an image could name /etc/shadow): CRIU, restoring as that
        // user, cannot open it so, where root's CRIU could have.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {std::string("a=--local-users ") + nobody,
                                                     std::string("b=--allow-uid ") + nobody}});
        temp_dir dir("unwritable");
        auto program = runnable_copy(dir, "fork_or_report");
        auto precious = dir.path / "precious";
        std::ofstream(precious) << "untouched\n";
        REQUIRE(::chown(precious.c_str(), 65534, 65534) == 0);
        fs::permissions(precious, fs::perms::owner_read | fs::perms::owner_write);

        auto r = hosts.run("a", as_nobody(dir, {program, "b:7000", "--hold-unwritable", precious.string()}));
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::restore_failed);
        CHECK(error.find("Permission denied") != std::string::npos);
        CHECK(error.find("precious") != std::string::npos);
        CHECK(read_file(precious.string()) == "untouched\n");
        struct stat st {};
        REQUIRE(::stat(precious.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0400);
        check_nothing_left(hosts, {"a", "b"}, {});

        // Root's process, trusted by design (--allow-root), is restored by
        // root's CRIU, which may open it so: the refusal above is the user's.
        fs::permissions(precious, fs::perms::owner_read | fs::perms::owner_write);
        auto as_root = hosts.run("a", {program, "b:7000", "--hold-unwritable", precious.string()});
        INFO("as root: " << as_root.out << as_root.err);
        CHECK(lines_with(as_root.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a user's child forks again and CRIU inside its namespace works as that user") {
        // The child on b forks to c: b's agent checkpoints it from inside the
        // child's namespaces, which it joins through a pidfd of their init,
        // with CRIU as the user. (Root's CRIU could not even do it here: this
        // machine's root lacks CAP_SYS_RESOURCE to read another user's rlimits.)
        require_fork_environment();
        std::string user = std::string(" ") + nobody;
        test_hosts hosts({"a", "b", "c"}, {.agent_args = {"a=--local-users" + user,
                                                          "b=--local-users" + user + " --allow-uid" + user,
                                                          "c=--allow-uid" + user}});
        temp_dir dir("chain");
        auto probe = runnable_copy(dir, "chain_probe");
        auto r = hosts.run("a", as_nobody(dir, {probe, "b:7000", "c:7000"}));
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b", "c"}));
        REQUIRE(r.status == 0);
        auto origin = only_line(r.out, "origin pid=");
        auto child = only_line(r.out, "child pid=");
        auto grandchild = only_line(r.out, "grandchild pid=");
        CHECK(field(child, "sum") == field(origin, "sum"));
        CHECK(field(grandchild, "sum") == field(origin, "sum"));
        CHECK(field(grandchild, "addrs") == hosts.address("c"));
        CHECK(field(only_line(r.out, "child waited "), "status") == "0");
        check_nothing_left(hosts, {"a", "b", "c"}, {{"b", 1}, {"c", 1}});
    }

    TEST_CASE("a user's fork whose pid a root process took meanwhile checkpoints nothing of root's") {
        // The attack of a user with a fork in flight: b's agent is held still
        // (as a slow endpoint would be), the program is killed after its agent
        // checked who it is, and a process of root's takes its pid. The agent
        // holds a pidfd of the caller: it sees the caller ended and dumps nothing.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {std::string("a=--local-users ") + nobody}});
        temp_dir dir("reused");
        auto probe = runnable_copy(dir, "memory_probe");
        int b_agent = hosts.agent_pid("b");
        REQUIRE(::kill(b_agent, SIGSTOP) == 0);
        struct resume {
            int pid;
            ~resume() { ::kill(pid, SIGCONT); }
        } resume_b{b_agent};

        auto program = hosts.start("a", as_nobody(dir, {probe, "b:7000", "1", "caller"}));
        int pid = program.pid();
        REQUIRE(hosts.wait_for_events("a", [&](const std::vector<agent_event>& events) {
            return std::any_of(events.begin(), events.end(), [&](const agent_event& e) {
                return e.name == "fork_request" && e["pid"] == std::to_string(pid);
            });
        }));
        program.kill_now();  // its pid is free

        // A root process on a takes that very pid (the next one given out is
        // ns_last_pid + 1).
        std::optional<running_program> root;
        for (int attempt = 0; attempt < 20 && !root; ++attempt) {
            std::ofstream("/proc/sys/kernel/ns_last_pid") << pid - 1;
            // (stdin opened inside a's mount namespace, as any program's there)
            auto candidate = hosts.start("a", {"/bin/sh", "-c", "exec /usr/bin/tail -f /dev/null </dev/null"});
            if (candidate.pid() == pid) root.emplace(std::move(candidate));
        }
        REQUIRE_MESSAGE(root, "no process could take pid " << pid);
        ::kill(b_agent, SIGCONT);

        // The fork ends, one way or the other.
        auto p = std::to_string(pid);
        auto ended_for = [&](const agent_event& e) {
            return (e.name == "fork_failed" || e.name == "forked") && e["pid"] == p;
        };
        REQUIRE(hosts.wait_for_events("a", [&](const std::vector<agent_event>& events) {
            return std::any_of(events.begin(), events.end(), ended_for);
        }));
        INFO(agent_logs(hosts, {"a", "b"}));
        // It ended on the agent's pidfd of the caller, taken when it
        // connected: the caller is gone, so CRIU never ran on its pid (and,
        // had it run, as the user it could not have dumped root's process).
        auto failed = hosts.events("a", "fork_failed");
        REQUIRE(failed.size() == 1);
        CHECK(failed[0]["pid"] == p);
        CHECK(failed[0]["text"].find("pid " + p + " ended before its checkpoint was complete") != std::string::npos);
        CHECK(hosts.events("a", "forked").empty());
        // Root's process is untouched (not stopped, still running), and
        // nothing of it reached b: no image, no restored process.
        auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
        auto state = stat.substr(stat.rfind(')') + 2, 1);
        CHECK(state != "T");
        CHECK(state != "t");
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.work_dir_entries("a").empty());
        root->kill_now();
    }

    TEST_CASE("a user's connection held by a set-uid program gets no checkpoint of it") {
        // The user connects, then runs a set-uid program in the same process,
        // which keeps the connection; a child of the user's asks the fork.
        // The process is root's now (and not dumpable): the agent refuses it
        // before any CRIU runs.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {std::string("a=--local-users ") + nobody}});
        temp_dir dir("setid");
        auto caller = runnable_copy(dir, "setid_caller");
        auto setid = (dir.path / "setid_tail").string();
        fs::copy_file("/usr/bin/tail", setid);
        REQUIRE(::chown(setid.c_str(), 0, 0) == 0);
        REQUIRE(::chmod(setid.c_str(), 04755) == 0);

        auto r = hosts.run("a", as_nobody(dir, {caller, "b:7000", setid, "-f", "/dev/null"}));
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        auto refused = lines_starting_with(r.out, "refused: ");
        REQUIRE(refused.size() == 1);
        CHECK(refused[0].starts_with("refused: " + std::to_string(static_cast<int>(rfork::errc::not_permitted)) + " "));
        CHECK(refused[0].find("no longer runs as uid 65534") != std::string::npos);
        // No CRIU ran on a, nothing reached b.
        CHECK(hosts.events("b", "image_receiving").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
    }
}
