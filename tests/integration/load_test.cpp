// Many forks: at the same moment, and in a long row, with the agents keeping
// nothing afterwards (no children, no files, no descriptors, no memory).
#include "harness.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>

#include <stdlib.h>

using namespace rfork::test;

namespace {

// Resident memory of a process, in KiB (VmRSS).
long rss_kib(int pid) {
    std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);)
        if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
    return -1;
}

// The last few KiB of a long text, for messages.
std::string tail(const std::string& text) { return text.substr(text.size() > 4000 ? text.size() - 4000 : 0); }

struct agent_usage {
    std::size_t fds_a, fds_b;
    long rss_a, rss_b;
};

agent_usage measure(const test_hosts& hosts) {
    return {fd_count(hosts.agent_pid("a")), fd_count(hosts.agent_pid("b")), rss_kib(hosts.agent_pid("a")),
            rss_kib(hosts.agent_pid("b"))};
}

// Waits until both agents have seen `children` children end: b ran them, a
// relayed them.
bool all_ended(const test_hosts& hosts, std::size_t children) {
    bool b = hosts.wait_for_events("b", "child_ended", children, 60s);
    bool a = hosts.wait_for_events("a", "forked_child_ended", children, 60s);
    return a && b;
}

// An agent forgets a child's record (and its descriptors) once the child's
// parent has gone, which it learns a moment after the parent's exit. Waits,
// bounded, until both agents are back at `fds` open descriptors, making one
// request to each agent per round so that each has served what came before.
// Returns the rounds it took, or -1 when the bound ran out.
int wait_for_fd_counts(const test_hosts& hosts, std::size_t fds_a, std::size_t fds_b) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (int round = 0; std::chrono::steady_clock::now() < deadline; ++round) {
        if (fd_count(hosts.agent_pid("a")) == fds_a && fd_count(hosts.agent_pid("b")) == fds_b) return round;
        hosts.run("a", {program_path("rfork-agent"), "list"}, {}, 10s);
        hosts.run("b", {program_path("rfork-agent"), "list"}, {}, 10s);
    }
    return -1;
}

// load_loop's output after `forks` forks: every child ran once, and the parent
// got each one's own exit code.
void check_loop_output(const std::string& out, std::size_t forks) {
    CHECK(lines_with(out, "done count=" + std::to_string(forks) + " ").size() == 1);
    std::set<std::string> ids;
    for (std::size_t n = 0; n < forks; ++n) {
        CAPTURE(n);
        auto parent = lines_starting_with(out, "parent n=" + std::to_string(n) + " ");
        auto child = lines_starting_with(out, "child n=" + std::to_string(n) + " ");
        REQUIRE(parent.size() == 1);
        REQUIRE(child.size() == 1);
        CHECK(field(parent[0], "status") == std::to_string(n % 250 + 1));
        CHECK(field(child[0], "id") == field(parent[0], "id"));
        ids.insert(field(parent[0], "id"));
    }
    CHECK(ids.size() == forks);
}

}  // namespace

TEST_SUITE("integration.load") {
    TEST_CASE("16 programs forking at the same moment all get their own child and leave nothing behind") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        constexpr std::size_t programs = 16;
        auto started = std::chrono::steady_clock::now();
        std::vector<running_program> running;
        running.reserve(programs);
        for (std::size_t i = 0; i < programs; ++i)
            running.push_back(hosts.start("a", {program_path("memory_probe"), "b:7000", "4"}));

        // One deadline for all: they run together.
        auto deadline = started + 180s;
        std::set<std::string> ids, sums;
        auto agent_b_namespace =
            std::filesystem::read_symlink("/proc/" + std::to_string(hosts.agent_pid("b")) + "/ns/pid").string();
        for (std::size_t i = 0; i < programs; ++i) {
            CAPTURE(i);
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            auto r = running[i].finish(std::max(left, std::chrono::milliseconds(1)));
            INFO("stdout: " << r.out << "\nstderr: " << r.err << "\na's log: " << hosts.agent_log("a")
                            << "\nb's log: " << hosts.agent_log("b"));
            REQUIRE(r.status == 0);
            auto parents = lines_with(r.out, "parent id=");
            auto children = lines_with(r.out, "child id=");
            REQUIRE(parents.size() == 1);
            REQUIRE(children.size() == 1);
            CHECK(field(children[0], "id") == field(parents[0], "id"));
            CHECK(field(children[0], "sum") == field(parents[0], "sum"));
            CHECK(field(children[0], "host") == "b");
            CHECK(field(children[0], "addrs") == hosts.address("b"));
            CHECK(field(children[0], "pid") == field(parents[0], "child_pid"));
            // In a pid namespace of its own: not the parent's, not the one b's agent runs in.
            CHECK(field(children[0], "pidns") != field(parents[0], "pidns"));
            CHECK(field(children[0], "pidns") != agent_b_namespace);
            ids.insert(field(parents[0], "id"));
            sums.insert(field(children[0], "sum"));
        }
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        MESSAGE(programs << " simultaneous forks of 4 MiB programs done in " << seconds << " s");
        CHECK(ids.size() == programs);   // every child its own
        CHECK(sums.size() == programs);  // each with its own parent's memory

        // Once all have ended, neither host keeps anything.
        bool ended = all_ended(hosts, programs);
        INFO("a's log: " << hosts.agent_log("a") << "\nb's log: " << hosts.agent_log("b"));
        CHECK(ended);
        CHECK(hosts.events("b", "child_ended").size() == programs);
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
    }

    TEST_CASE("200 forks in a row leave the agents' descriptors and memory where they were") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto idle = measure(hosts);

        // Warm-up: whatever an agent sets up once, it has set up after these.
        constexpr std::size_t warm_up = 5, forks = 200;
        {
            auto warm = hosts.run("a", {program_path("load_loop"), "b:7000", std::to_string(warm_up)}, {}, 60s);
            INFO("warm-up stdout: " << warm.out << "\nstderr: " << warm.err << "\na's log: " << hosts.agent_log("a")
                                    << "\nb's log: " << hosts.agent_log("b"));
            REQUIRE(warm.status == 0);
            check_loop_output(warm.out, warm_up);
            REQUIRE(all_ended(hosts, warm_up));
        }
        int warm_rounds = wait_for_fd_counts(hosts, idle.fds_a, idle.fds_b);
        auto before = measure(hosts);
        MESSAGE("idle agents: a fds=" << idle.fds_a << " rss=" << idle.rss_a << " KiB, b fds=" << idle.fds_b
                                      << " rss=" << idle.rss_b << " KiB");
        MESSAGE("after " << warm_up << " warm-up forks (" << warm_rounds << " settle rounds): a fds=" << before.fds_a
                         << " rss=" << before.rss_a << " KiB, b fds=" << before.fds_b << " rss=" << before.rss_b
                         << " KiB");

        auto started = std::chrono::steady_clock::now();
        auto r = hosts.run("a", {program_path("load_loop"), "b:7000", std::to_string(forks)}, {}, 240s);
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        MESSAGE(forks << " forks in a row took " << seconds << " s (" << seconds * 1000 / forks << " ms each)");
        {
            INFO("end of stdout: " << tail(r.out) << "\nstderr: " << r.err << "\nend of a's log: "
                                   << tail(hosts.agent_log("a")) << "\nend of b's log: " << tail(hosts.agent_log("b")));
            REQUIRE(r.status == 0);
            check_loop_output(r.out, forks);
            REQUIRE(all_ended(hosts, warm_up + forks));
        }

        int rounds = wait_for_fd_counts(hosts, before.fds_a, before.fds_b);
        auto after = measure(hosts);
        MESSAGE("after " << forks << " more forks (" << rounds << " settle rounds): a fds=" << after.fds_a
                         << " rss=" << after.rss_a << " KiB, b fds=" << after.fds_b << " rss=" << after.rss_b << " KiB");
        CHECK(after.fds_a == before.fds_a);
        CHECK(after.fds_b == before.fds_b);
        CHECK(after.rss_a > 0);
        CHECK(after.rss_b > 0);
        CHECK(after.rss_a <= before.rss_a + 2048);
        CHECK(after.rss_b <= before.rss_b + 2048);
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("a").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
    }

    TEST_CASE("200 forks in a row with the parent's stdout and stderr regular files each get their child's exit code") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        // Files under /tmp, as with "program >out 2>err": the agent writes the
        // children's output into them itself instead of through pipes.
        char templ[] = "/tmp/rfork-load-XXXXXX";
        REQUIRE(::mkdtemp(templ) != nullptr);
        struct remove_at_end {
            std::string dir;
            ~remove_at_end() {
                std::error_code ec;
                std::filesystem::remove_all(dir, ec);
            }
        } scratch{templ};
        std::string output = scratch.dir + "/stdout", errors = scratch.dir + "/stderr";
        constexpr std::size_t forks = 200;
        auto started = std::chrono::steady_clock::now();
        auto r = hosts.run("a",
                           {"/bin/sh", "-c", "exec \"$0\" \"$@\" >\"$RFORK_TEST_OUTPUT\" 2>\"$RFORK_TEST_ERRORS\"",
                            program_path("load_loop"), "b:7000", std::to_string(forks)},
                           {{"RFORK_TEST_OUTPUT", output}, {"RFORK_TEST_ERRORS", errors}}, 240s);
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        MESSAGE(forks << " forks in a row (stdout and stderr files) took " << seconds << " s");
        auto out = read_file(output), err = read_file(errors);
        INFO("end of stdout (a file): " << tail(out) << "\nstderr (a file): " << err << "\nend of a's log: "
                                          << tail(hosts.agent_log("a")) << "\nend of b's log: "
                                          << tail(hosts.agent_log("b")));
        CHECK(err.empty());
        REQUIRE(r.status == 0);
        check_loop_output(out, forks);
        REQUIRE(all_ended(hosts, forks));
        CHECK(hosts.work_dir_entries("a").empty());
        CHECK(hosts.work_dir_entries("b").empty());
        CHECK(hosts.processes_besides_agent("b").empty());
    }
}
