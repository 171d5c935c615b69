// Faults in the middle of a fork: the side that survives gets a clear error
// in bounded time and keeps nothing of the fork.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>

#include <signal.h>

using namespace rfork::test;

namespace {

// Starts a fork from a to b whose image is on its way once this returns:
// 256 MiB take long enough to send and restore for a fault to strike mid-way,
// and "caller" sends a whole image before the child runs (lazy pages have
// tests of their own, in lazy_test.cpp).
running_program start_whole_image_fork(const test_hosts& hosts) {
    auto program = hosts.start("a", {program_path("memory_probe"), "b:7000", "256", "caller"});
    bool receiving = hosts.wait_for_events("b", "image_receiving");
    REQUIRE(receiving);
    return program;
}

}  // namespace

TEST_SUITE("integration.fault") {
    TEST_CASE("the receiving agent killed mid-fork: the parent gets an error within 5 s and runs on") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto fds_a = hosts.agent_fds("a");
        auto program = start_whole_image_fork(hosts);
        auto killed_at = std::chrono::steady_clock::now();
        REQUIRE(::kill(hosts.agent_pid("b"), SIGKILL) == 0);

        auto r = program.finish(60s);
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\na's log: " << hosts.agent_log("a"));
        CHECK(seconds < 5.0);
        CHECK(r.status == 1);  // memory_probe reports the exception and exits 1
        CHECK(r.err.find("rfork: ") != std::string::npos);
        CHECK(r.err.find("b:7000") != std::string::npos);
        CHECK(lines_with(r.out, "child id=").empty());
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
        CHECK(hosts.agent_fds("a") == fds_a);
        // b is gone and with it everything of the fork: no process is left in its network namespace.
        CHECK(hosts.processes_besides_agent("b").empty());
    }

    TEST_CASE("the sending agent killed mid-fork: the receiver keeps nothing and the parent runs on") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto fds_b = hosts.agent_fds("b");
        auto program = start_whole_image_fork(hosts);
        REQUIRE(::kill(hosts.agent_pid("a"), SIGKILL) == 0);

        auto r = program.finish(30s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\nb's log: " << hosts.agent_log("b"));
        CHECK(r.status == 1);
        CHECK(r.err.find("rfork: ") != std::string::npos);  // the agent closed without an answer
        CHECK(lines_with(r.out, "child id=").empty());
        // b drops the connection, the partial image and any restore in progress.
        bool dropped = hosts.wait_for_events("b", [](const std::vector<agent_event>& events) {
            return std::any_of(events.begin(), events.end(), [](const agent_event& e) {
                return e.name == "restore_failed" || e.name == "child_restored";
            });
        });
        CHECK(dropped);
        CHECK(hosts.events("b", "child_restored").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.agent_fds("b") == fds_b);
    }

    TEST_CASE("the network drops mid-transfer: both sides give up within their idle timeout and keep nothing") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--idle-timeout 2"}});
        auto fds_a = hosts.agent_fds("a");
        auto fds_b = hosts.agent_fds("b");
        auto program = start_whole_image_fork(hosts);
        auto cut_at = std::chrono::steady_clock::now();
        hosts.set_link("b", false);

        auto r = program.finish(60s);
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut_at).count();
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(r.status == 1);
        CHECK(r.err.find("b:7000") != std::string::npos);
        CHECK(seconds < 20.0);  // a few idle timeouts, not TCP's fifteen minutes
        bool dropped = hosts.wait_for_events("b", "restore_failed");
        CHECK(dropped);
        CHECK(hosts.events("b", "child_restored").empty());
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.agent_fds("a") == fds_a);
        // b drains and closes the dead connection within its idle timeout.
        CHECK(hosts.wait_for_events("b", "connection_drained"));
        CHECK(hosts.agent_fds("b") == fds_b);
    }

    TEST_CASE("the receiver's disk fills: the parent gets the reason and the receiver keeps nothing") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto fds_a = hosts.agent_fds("a");
        auto fds_b = hosts.agent_fds("b");
        // b's work directory becomes a tmpfs of 256 KiB, in b's own mount namespace.
        auto mounted = hosts.run("b", {"/usr/bin/mount", "-t", "tmpfs", "-o", "size=256k", "rfork-full", "/run/rfork/work"});
        REQUIRE(mounted.status == 0);
        // "caller": a whole image, which cannot fit.
        auto r = hosts.run("a", {program_path("memory_probe"), "b:7000", "16", "caller"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(r.status == 1);
        CHECK(r.err.find("No space left on device") != std::string::npos);
        CHECK(r.err.find("the image did not reach the remote agent") != std::string::npos);  // errc::transfer_failed
        CHECK(r.err.find("b:7000") != std::string::npos);
        CHECK(lines_with(r.out, "child id=").empty());
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.agent_fds("a") == fds_a);
        CHECK(hosts.agent_fds("b") == fds_b);
        // With room again, the same fork works.
        REQUIRE(hosts.run("b", {"/usr/bin/umount", "/run/rfork/work"}).status == 0);
        auto again = hosts.run("a", {program_path("memory_probe"), "b:7000", "16", "caller"});
        CHECK(lines_with(again.out, "child id=").size() == 1);
    }
}
