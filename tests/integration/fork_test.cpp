// Real forks between two test hosts, on real CRIU: the child continues where
// the parent was, on the other host, in its own pid namespace.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace rfork::test;

namespace {

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
