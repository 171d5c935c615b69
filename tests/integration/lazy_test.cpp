// Lazy pages: a single-threaded program's child starts on the other host
// before its memory has all arrived; the memory follows on the agents' own
// connection. The child must still see exactly the parent's memory, and a
// child whose memory cannot all arrive must not run on with holes.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <signal.h>

using namespace rfork::test;

namespace {

// The place of the first event of `host` named `name` whose `key` is
// `value` among all of its events, or -1.
std::ptrdiff_t place_of(const test_hosts& hosts, const std::string& host, const std::string& name,
                        const std::string& key, const std::string& value) {
    auto events = hosts.events(host);
    auto found = std::find_if(events.begin(), events.end(),
                              [&](const agent_event& e) { return e.name == name && e[key] == value; });
    return found == events.end() ? -1 : found - events.begin();
}

// Whether `host` received exactly one image, and whether its memory was to follow.
void check_one_image(const test_hosts& hosts, const std::string& host, bool lazy) {
    auto images = hosts.events(host, "image_receiving");
    REQUIRE(images.size() == 1);
    CHECK(images[0]["lazy"] == (lazy ? "1" : "0"));
}

// Waits until the agent of `host` has seen a child it hosted end, however it ended.
bool hosted_child_ended(const test_hosts& hosts, const std::string& host) {
    return hosts.wait_for_events(host, "child_ended");
}

// Waits until the agent of `host` has seen the parent's side of a fork end:
// its child's status known, or the child lost.
bool forked_child_done(const test_hosts& hosts, const std::string& host) {
    return hosts.wait_for_events(host, [](const std::vector<agent_event>& events) {
        return std::any_of(events.begin(), events.end(), [](const agent_event& e) {
            return e.name == "forked_child_ended" || e.name == "forked_child_lost";
        });
    });
}

}  // namespace

TEST_SUITE("integration.lazy") {
    TEST_CASE("lazy pages: the child runs before its memory is all there and that memory is the parent's") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("memory_probe"), "b:7000", "256"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto parent = only_line(r.out, "parent id=");
        auto child = only_line(r.out, "child id=");
        CHECK(field(child, "sum") == field(parent, "sum"));
        CHECK(field(child, "sum").size() == 16);

        // b restored the child from an image without its memory, then took
        // the memory: all 256 MiB of it, after the child was running.
        auto id = field(parent, "id");
        check_one_image(hosts, "b", true);
        REQUIRE(hosts.wait_for_events("b", "image_complete"));
        auto restored = place_of(hosts, "b", "child_restored", "id", id);
        auto complete = place_of(hosts, "b", "image_complete", "id", id);
        REQUIRE(restored >= 0);
        REQUIRE(complete >= 0);
        CHECK(restored < complete);
        CHECK(std::stoull(hosts.events("b", "image_complete").at(0)["bytes"]) > 256ull << 20);

        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("without lazy pages the whole image goes first and the child's memory is the parent's") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--no-lazy-pages"}});
        auto r = hosts.run("a", {program_path("memory_probe"), "b:7000", "64"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto parent = only_line(r.out, "parent id=");
        auto child = only_line(r.out, "child id=");
        CHECK(field(child, "sum") == field(parent, "sum"));
        check_one_image(hosts, "b", false);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a small snapshot goes whole even where lazy pages work") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("memory_probe"), "b:7000", "4"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        CHECK(field(only_line(r.out, "child id="), "sum") == field(only_line(r.out, "parent id="), "sum"));
        check_one_image(hosts, "b", false);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("lazy pages: the network drops while the memory arrives and the child is killed and nothing is left") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--idle-timeout 2"}});
        auto fds_a = hosts.agent_fds("a");
        auto fds_b = hosts.agent_fds("b");
        // 1 GiB: its memory is still on the way when the child runs.
        auto program = hosts.start("a", {program_path("memory_probe"), "b:7000", "1024"});
        bool restored = hosts.wait_for_events("b", "child_restored");
        REQUIRE(restored);
        hosts.set_link("b", false);

        auto r = program.finish(60s);
        bool killed = hosts.wait_for_events("b", "memory_failed");
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(killed);
        // The parent forked and goes on; the child never reports memory with holes.
        CHECK(r.status == 0);
        CHECK(lines_with(r.out, "parent id=").size() == 1);
        CHECK(lines_with(r.out, "child id=").empty());
        CHECK(hosts.events("b", "image_complete").empty());
        CHECK(hosted_child_ended(hosts, "b"));
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
        CHECK(hosts.agent_fds("b") == fds_b);
        // a's side of the fork ends with its connection.
        bool a_done = hosts.wait_for_events("a", "forked_child_lost");
        CHECK(a_done);
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
        CHECK(hosts.agent_fds("a") == fds_a);
    }

    TEST_CASE("lazy pages: memory that stops arriving on a live connection gets the child killed at the image timeout") {
        // a's agent is held still once the child runs: its connection stays
        // up (the kernel still answers), so only b's --image-timeout, counted
        // from the restore, ends the wait for the rest of the memory.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--image-timeout 3"}});
        auto program = hosts.start("a", {program_path("memory_probe"), "b:7000", "1024"});
        bool restored = hosts.wait_for_events("b", "child_restored");
        REQUIRE(restored);
        int a_agent = hosts.agent_pid("a");
        REQUIRE(::kill(a_agent, SIGSTOP) == 0);
        struct resume {
            int pid;
            ~resume() { ::kill(pid, SIGCONT); }
        } resume_a{a_agent};

        // Well within the idle timeout (60 s), which plays no part here.
        CHECK(hosted_child_ended(hosts, "b"));
        INFO(agent_logs(hosts, {"a", "b"}));
        CHECK(hosts.events("b", "image_complete").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());

        ::kill(a_agent, SIGCONT);
        auto r = program.finish(60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(r.status == 0);
        CHECK(lines_with(r.out, "parent id=").size() == 1);
        CHECK(lines_with(r.out, "child id=").empty());
        bool a_done = forked_child_done(hosts, "a");
        CHECK(a_done);
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
    }

    TEST_CASE("lazy pages: memory beyond the receiver's maximum image size is refused before the restore") {
        require_fork_environment();
        // Room for the image's files, not for 64 MiB of memory: the sender
        // says how much memory follows, and the receiver refuses at once.
        test_hosts hosts({"a", "b"}, {.agent_args = {"--max-image-size 16777216"}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000", "--memory", "64"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("memory to follow") != std::string::npos);
        CHECK(line.find("--max-image-size 16777216") != std::string::npos);
        CHECK(hosts.events("b", "child_restored").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }
}
