// Real forks between two test hosts, on real CRIU: the child continues where
// the parent was, on the other host, in its own pid namespace.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

// The cgroup v2 path of a process ("0::PATH" in /proc/PID/cgroup), or "".
std::string cgroup_of(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    for (std::string line; std::getline(in, line);)
        if (line.starts_with("0::")) return line.substr(3);
    return {};
}

// A cgroup of its own in a cgroup2 hierarchy mounted for the test; the test
// process joins it while it starts a program (which stays there), then leaves.
struct own_cgroup {
    fs::path mount = fs::temp_directory_path() / ("rfork-cgroup-" + std::to_string(::getpid()));
    std::string name = "/rfork-test-" + std::to_string(::getpid());
    std::string before = cgroup_of(::getpid());
    bool mounted = false;

    own_cgroup() {
        fs::create_directories(mount);
        mounted = ::mount("cgroup2", mount.c_str(), "cgroup2", 0, nullptr) == 0;
        std::error_code ec;
        if (mounted) fs::create_directory(mount.string() + name, ec);
    }
    // Whether this process is in `to` now.
    bool move_self(const std::string& to) const {
        std::ofstream(mount.string() + to + "/cgroup.procs") << ::getpid() << std::flush;
        return cgroup_of(::getpid()) == to;
    }
    ~own_cgroup() {
        if (mounted) {
            move_self(before);  // if a failure left it there
            std::error_code ignored;
            fs::remove(mount.string() + name, ignored);  // rmdir: empty once its processes ended
            ::umount2(mount.c_str(), MNT_DETACH);
        }
        std::error_code ignored;
        fs::remove(mount, ignored);
    }
};

struct probe_report {
    std::string parent_line, child_line;
};

// Runs memory_probe (already started on a, forking to b) to its end, with its
// child's: the child's line arrives in the parent's stdout, as after fork().
probe_report run_probe(running_program program) {
    auto parent = program.finish(60s);
    INFO("parent stdout: " << parent.out << "\nparent stderr: " << parent.err);
    REQUIRE(parent.status == 0);
    auto parent_lines = lines_with(parent.out, "parent id=");
    auto child_lines = lines_with(parent.out, "child id=");
    REQUIRE(parent_lines.size() == 1);
    REQUIRE(child_lines.size() == 1);
    return {parent_lines[0], child_lines[0]};
}

}  // namespace

TEST_SUITE("integration.fork") {
    TEST_CASE("the child's memory is the parent's and it runs on the other host in its own pid namespace") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        // A single-threaded program is checkpointed through a local snapshot
        // (automatic); "caller" checkpoints the program itself.
        for (std::string how : {"automatic", "caller"}) {
            CAPTURE(how);
            auto report = run_probe(hosts.start("a", {program_path("memory_probe"), "b:7000", "64", how}));
            INFO("parent: " << report.parent_line << "\nchild: " << report.child_line);

            // The buffer was filled from a seed that never left the parent.
            CHECK(field(report.child_line, "sum") == field(report.parent_line, "sum"));
            CHECK(field(report.child_line, "sum").size() == 16);
            // The parent knows its child's pid, in another pid namespace than
            // its own: the pid could not clash. The caller itself keeps its
            // pid; a snapshot is a new process, as after fork().
            CHECK(field(report.child_line, "pid") == field(report.parent_line, "child_pid"));
            CHECK(field(report.child_line, "pidns") != field(report.parent_line, "pidns"));
            if (how == "caller")
                CHECK(field(report.child_line, "pid") == field(report.parent_line, "pid"));
            else
                CHECK(field(report.child_line, "pid") != field(report.parent_line, "pid"));
            // Each side sees its own host's network.
            CHECK(field(report.parent_line, "addrs") == hosts.address("a"));
            CHECK(field(report.child_line, "addrs") == hosts.address("b"));
            // Both sides agree on which child this is, and where it runs.
            CHECK(field(report.child_line, "id") == field(report.parent_line, "id"));
            CHECK(field(report.parent_line, "host") == "b");
            CHECK(field(report.child_line, "host") == "b");
        }
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("the child runs under the receiving agent's cgroup and never in the cgroup its image names") {
        require_fork_environment();
        own_cgroup parent_group;
        REQUIRE(parent_group.mounted);
        REQUIRE_FALSE(parent_group.before.empty());
        test_hosts hosts({"a", "b"});
        // The parent runs in a cgroup of its own (which also exists on b: one
        // machine), so a restore that followed the image would put the child there.
        REQUIRE(parent_group.move_self(parent_group.name));
        auto program = hosts.start("a", {program_path("child_program"), "block", "b:7000"});
        REQUIRE(parent_group.move_self(parent_group.before));

        bool restored = hosts.wait_for_events("b", "child_restored");
        auto on_b = hosts.processes_besides_agent("b");
        auto agent_group = cgroup_of(hosts.agent_pid("b"));
        REQUIRE_FALSE(agent_group.empty());
        std::vector<std::string> groups;
        for (int pid : on_b) groups.push_back(cgroup_of(pid));
        auto list = hosts.run("b", {program_path("rfork-agent"), "list"});
        auto listed = lines_with(list.out, " a ");
        if (listed.size() == 1)
            hosts.run("b", {program_path("rfork-agent"), "kill", listed[0].substr(0, listed[0].find(' '))});
        auto parent = program.finish(60s);
        INFO("parent: " << parent.out << parent.err << "\nlist on b: " << list.out << agent_logs(hosts, {"a", "b"}));
        REQUIRE(restored);
        REQUIRE(listed.size() == 1);
        // The child and its namespace's init: both in b's agent's cgroup v2,
        // or, where v2 has the controllers for the child's own cgroup
        // (cgroup_test.cpp), in that, beside the agent's leaf.
        CHECK(on_b.size() == 2);
        for (auto& group : groups) {
            bool own = fs::path(group).filename().string().starts_with("rfork-child-") &&
                       fs::path(group).parent_path() == fs::path(agent_group).parent_path();
            CHECK((group == agent_group || own));
            CHECK(group.find("rfork-test-") == std::string::npos);
        }
        CHECK(parent.status == 0);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("the silly example: parent and child each count to ten in the parent's stdout") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto parent = hosts.run("a", {program_path("silly"), "b:7000"});
        INFO("parent stdout: " << parent.out << "\nparent stderr: " << parent.err);
        REQUIRE(parent.status == 0);
        auto forked = lines_with(parent.out, "parent: forked child ");
        REQUIRE(forked.size() == 1);
        std::string id = forked[0].substr(std::string("parent: forked child ").size(), 8);

        // Each side's lines in order; how the two interleave is up to the scheduler.
        std::vector<std::string> expected_parent, expected_child;
        for (int i = 0; i < 10; ++i) {
            expected_parent.push_back("parent " + std::to_string(i));
            expected_child.push_back("child " + std::to_string(i));
        }
        CHECK(lines_starting_with(parent.out, "parent ") == expected_parent);
        CHECK(lines_starting_with(parent.out, "child ") == expected_child);
        // The parent waited for its child, after every line of it.
        CHECK(parent.out.ends_with("parent: child " + id + " exited with status 0\n"));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("two programs forking at the same time both get their own child") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto first = hosts.start("a", {program_path("memory_probe"), "b:7000", "16"});
        auto second = hosts.start("a", {program_path("memory_probe"), "b:7000", "16"});
        auto one = run_probe(std::move(first));
        auto two = run_probe(std::move(second));
        CHECK(field(one.parent_line, "id") != field(two.parent_line, "id"));
        CHECK(field(one.parent_line, "pid") != field(two.parent_line, "pid"));
        CHECK(field(one.child_line, "sum") == field(one.parent_line, "sum"));
        CHECK(field(two.child_line, "sum") == field(two.parent_line, "sum"));
        CHECK(field(one.child_line, "sum") != field(two.child_line, "sum"));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("a program run from a terminal forks and its child writes to that terminal") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto parent = hosts.start("a", {program_path("silly"), "b:7000"}, {}, true).finish(60s);
        INFO("parent terminal: " << parent.out << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(parent.status == 0);
        // The terminal turned each "\n" into "\r\n" once: the child's copy of it did no processing of its own.
        for (int i = 0; i < 10; ++i) {
            CHECK(parent.out.find("child " + std::to_string(i) + "\r\n") != std::string::npos);
            CHECK(parent.out.find("parent " + std::to_string(i) + "\r\n") != std::string::npos);
        }
        CHECK(parent.out.find("\r\r\n") == std::string::npos);
        CHECK(lines_with(parent.out, "exited with status 0").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }
}
