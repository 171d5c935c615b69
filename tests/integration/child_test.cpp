// The forked child as its parent sees it: its output in the parent's stdout
// and stderr, its exit status through wait(), signals through kill(), the
// parent's stdin, a life after the parent's, rfork-agent list and kill on its
// host, and chains of forks; stdio the agent must use with care (a silent
// socket, a stdout open only for reading, regular files). The programs are programs/child_program.cpp and
// programs/chain_probe.cpp.
#include "event_wait.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>

#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace rfork::test;

namespace {

namespace fs = std::filesystem;

const std::string child_program = "child_program";

// A directory every test host sees (they share /tmp; only /run/rfork is each host's own).
struct shared_dir {
    std::string path;
    shared_dir() {
        char templ[] = "/tmp/rfork-child-XXXXXX";
        if (!::mkdtemp(templ)) throw std::runtime_error("mkdtemp failed");
        path = templ;
    }
    ~shared_dir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    shared_dir(const shared_dir&) = delete;
    shared_dir& operator=(const shared_dir&) = delete;

    void create(const std::string& name) const { std::ofstream(path + "/" + name) << "go\n"; }
};

// The one line of `text` starting with `prefix`.
std::vector<std::string> words(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> result;
    for (std::string w; in >> w;) result.push_back(w);
    return result;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> result;
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
}

// Where two texts first differ, for a message short enough to read.
std::string describe_difference(const std::string& actual, const std::string& expected) {
    std::size_t i = 0;
    while (i < actual.size() && i < expected.size() && actual[i] == expected[i]) ++i;
    if (i == actual.size() && i == expected.size()) return "identical";
    auto around = [&](const std::string& s) { return s.substr(i < 40 ? 0 : i - 40, 80); };
    std::ostringstream out;
    out << "first difference at byte " << i << " of " << actual.size() << " (expected " << expected.size()
        << " bytes)\n  actual around it:   [" << around(actual) << "]\n  expected around it: [" << around(expected)
        << "]";
    return out.str();
}

// The ids of the children restored on a host, from its agent's events.
std::vector<std::string> restored_ids(const test_hosts& hosts, const std::string& host) {
    std::vector<std::string> ids;
    for (auto& e : hosts.events(host, "child_restored")) ids.push_back(e["id"]);
    return ids;
}

// The bytes child_program's bulk mode writes: splitmix64 words from `seed`, little-endian.
std::string child_pattern(std::uint64_t seed, std::size_t size) {
    std::string bytes(size, '\0');
    std::uint64_t state = seed;
    for (std::size_t i = 0; i < size; i += 8) {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        for (std::size_t b = 0; b < 8 && i + b < size; ++b) bytes[i + b] = static_cast<char>(z >> (8 * b));
    }
    return bytes;
}

// Waits, bounded, until a process (not yet reaped) has exited.
bool wait_for_exit_of(int pid, std::chrono::milliseconds bound) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return false;
    pollfd p{fd, POLLIN, 0};
    bool exited = ::poll(&p, 1, static_cast<int>(bound.count())) == 1;
    ::close(fd);
    return exited;
}

// chain_probe FIRST:7000 SECOND:7000 from a: three generations on a, `first` and `second`.
void check_chain(const test_hosts& hosts, const std::vector<std::string>& names, const std::string& first,
                 const std::string& second, const std::string& mib = "8") {
    auto r = hosts.run("a", {program_path("chain_probe"), first + ":7000", second + ":7000", mib});
    INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, names));
    REQUIRE(r.status == 0);
    auto origin = only_line(r.out, "origin pid=");
    auto child = only_line(r.out, "child pid=");
    auto grandchild = only_line(r.out, "grandchild pid=");

    // The memory filled before the first fork, in all three.
    CHECK(field(origin, "sum").size() == 16);
    CHECK(field(child, "sum") == field(origin, "sum"));
    CHECK(field(grandchild, "sum") == field(origin, "sum"));
    // Each runs where it was sent.
    CHECK(field(origin, "addrs") == hosts.address("a"));
    CHECK(field(child, "addrs") == hosts.address(first));
    CHECK(field(grandchild, "addrs") == hosts.address(second));
    // Each parent knows its child's pid, in a pid namespace of the child's
    // own, so none clashes (not even on the origin's host, when it is a again).
    auto origin_waited = only_line(r.out, "origin waited ");
    auto child_waited = only_line(r.out, "child waited ");
    CHECK(field(child, "pid") == field(origin_waited, "child_pid"));
    CHECK(field(grandchild, "pid") == field(child_waited, "grandchild_pid"));
    std::set<std::string> namespaces{field(origin, "pidns"), field(child, "pidns"), field(grandchild, "pidns")};
    CHECK(namespaces.size() == 3);
    // Each parent waited for its own child.
    CHECK(field(origin_waited, "status") == "0");
    CHECK(field(child_waited, "status") == "0");
    CHECK(field(origin_waited, "child") != field(child_waited, "grandchild"));
    CHECK(restored_ids(hosts, first) == std::vector<std::string>{field(origin_waited, "child")});
    CHECK(restored_ids(hosts, second) == std::vector<std::string>{field(child_waited, "grandchild")});

    std::map<std::string, std::size_t> ended;
    ended[first] += 1;
    ended[second] += 1;
    check_nothing_left(hosts, names, ended);
}

}  // namespace

TEST_SUITE("integration.child") {
    TEST_CASE("the child's stdout and stderr lines reach the parent's stdout and stderr complete and in order") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        const int lines_out = 2000, lines_err = 1500;
        auto r = hosts.run("a", {program_path(child_program), "output", "b:7000", std::to_string(lines_out),
                                 std::to_string(lines_err)});
        INFO("parent stderr (first 2000 bytes): " << r.err.substr(0, 2000) << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto forked = only_line(r.out, "parent forked id=");
        CHECK(field(forked, "host") == "b");

        // The parent's stdout is its own line before the fork, every child line
        // in order, then its own lines after wait(): nothing lost, added or moved.
        std::string expected_out = "parent before fork\n";
        for (int i = 0; i < lines_out; ++i) expected_out += "out " + std::to_string(i) + "\n";
        expected_out += forked + "\nparent waited status=0\n";
        bool same_out = r.out == expected_out;
        CHECK_MESSAGE(same_out, "stdout: " << describe_difference(r.out, expected_out));

        std::string expected_err = "parent stderr before fork\n";
        for (int i = 0; i < lines_err; ++i) expected_err += "err " + std::to_string(i) + "\n";
        expected_err += "parent stderr waited\n";
        bool same_err = r.err == expected_err;
        CHECK_MESSAGE(same_err, "stderr: " << describe_difference(r.err, expected_err));

        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("50 MiB written by the child arrive byte for byte in the parent's stdout") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        const std::size_t mib = 50;
        const std::uint64_t seed = 0x5eed2024;
        auto started = std::chrono::steady_clock::now();
        auto r = hosts.start("a", {program_path(child_program), "bulk", "b:7000", std::to_string(mib),
                                   std::to_string(seed)})
                     .finish(std::chrono::minutes(3));
        auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        MESSAGE("50 MiB from the child to the parent's stdout: " << seconds << " s");
        INFO("parent stderr: " << r.err << "\nstdout bytes: " << r.out.size() << agent_logs(hosts, {"a", "b"}));
        CHECK(r.status == 0);
        auto expected = child_pattern(seed, mib << 20);
        CHECK(r.out.size() == expected.size());
        bool same = r.out == expected;
        CHECK_MESSAGE(same, describe_difference(r.out, expected));
        CHECK(field(only_line(r.err, "parent waited "), "status") == "0");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("wait returns the child's exit code or 128 plus the signal that ended it") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        struct expectation {
            const char* how;
            int status;
        };
        const expectation cases[] = {{"0", 0}, {"42", 42}, {"255", 255}, {"segv", 128 + SIGSEGV}, {"abort", 128 + SIGABRT}};
        for (auto [how, status] : cases) {
            CAPTURE(how);
            auto r = hosts.run("a", {program_path(child_program), "exit", "b:7000", how});
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            CHECK(r.status == 0);
            CHECK(lines_with(r.out, std::string("child ends how=") + how).size() == 1);
            CHECK(field(only_line(r.out, "parent waited "), "status") == std::to_string(status));
        }
        check_nothing_left(hosts, {"a", "b"}, {{"b", std::size(cases)}});
    }

    TEST_CASE("kill ends a blocked child with the signal and a second kill finds no child") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path(child_program), "kill", "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        CHECK(field(only_line(r.out, "parent waited status="), "status") == "143");
        CHECK(field(only_line(r.out, "parent waited again "), "status") == "143");
        CHECK(lines_with(r.out, "child gave up").empty());
        CHECK(lines_with(r.out, "second kill succeeded").empty());
        auto second = only_line(r.out, "second kill error ");
        CHECK(field(second, "category") == "rfork");
        CHECK(field(second, "value") == std::to_string(static_cast<int>(rfork::errc::no_such_child)));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("wait long after the child ended still returns its status and a second wait too") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        auto program = hosts.start("a", {program_path(child_program), "late-wait", "b:7000", dir.path});
        // The child has ended on b and its parent's agent on a knows its status;
        // only then may the parent ask.
        bool ended_on_b = hosts.wait_for_events("b", "child_ended");
        bool known_on_a = hosts.wait_for_events("a", "forked_child_ended");
        CHECK(any_event_with(hosts.events("a", "forked_child_ended"), "status", "7"));
        dir.create("go");
        auto r = program.finish(60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(ended_on_b);
        CHECK(known_on_a);
        REQUIRE(r.status == 0);
        CHECK(lines_with(r.out, "child exits now").size() == 1);
        auto waited = only_line(r.out, "parent waited ");
        CHECK(field(waited, "first") == "7");
        CHECK(field(waited, "second") == "7");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("one parent waits for four children at once and gets each one's own exit code") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        const int count = 4;
        auto r = hosts.run("a", {program_path(child_program), "many", "b:7000", std::to_string(count), dir.path});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        CHECK(lines_with(r.out, "child gave up").empty());
        // The waits overlapped: each child ended only after the wait for the
        // next one had returned, while the wait for the first, issued first,
        // was still pending; so they returned last child first.
        auto done = lines_with(r.out, "parent wait-done ");
        REQUIRE(done.size() == static_cast<std::size_t>(count));
        for (int i = 0; i < count; ++i) CHECK(field(done[static_cast<std::size_t>(i)], "index") == std::to_string(count - 1 - i));
        std::set<std::string> ids;
        for (int i = 0; i < count; ++i) {
            CAPTURE(i);
            auto index = "index=" + std::to_string(i) + " ";
            auto forked = only_line(r.out, "parent forked " + index);
            auto waited = only_line(r.out, "parent waited " + index);
            CHECK(field(waited, "id") == field(forked, "id"));
            CHECK(field(waited, "status") == std::to_string(10 + i));
            ids.insert(field(forked, "id"));
        }
        CHECK(ids.size() == static_cast<std::size_t>(count));
        check_nothing_left(hosts, {"a", "b"}, {{"b", count}});
    }

    TEST_CASE("the child keeps running after its parent exited and its output still reaches the parent's stdout") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        auto program = hosts.start("a", {program_path(child_program), "outlive", "b:7000", dir.path});
        // The program writes parent-pid.tmp and renames it: parent-pid appears whole.
        bool pid_written = wait_for_new_file(dir.path, "parent-pid", 30s);
        int parent_pid = pid_written ? std::atoi(read_file(dir.path + "/parent-pid").c_str()) : -1;
        bool parent_exited = parent_pid > 0 && wait_for_exit_of(parent_pid, 30s);
        // The parent is gone; its child is still listed on b.
        auto list = hosts.run("b", {program_path("rfork-agent"), "list"});
        dir.create("go");
        auto r = program.finish(60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\nlist on b: " << list.out << list.err
                        << agent_logs(hosts, {"a", "b"}));
        REQUIRE(pid_written);
        CHECK(parent_exited);
        CHECK(r.status == 0);
        auto lines = lines_of(list.out);
        REQUIRE(lines.size() == 2);
        CHECK(words(lines[1]).at(1) == "a");

        // The child's lines, written after the parent had exited, are in the parent's stdout and stderr.
        auto forked = only_line(r.out, "parent forked id=");
        CHECK(words(lines[1]).at(0) == field(forked, "id"));
        auto exits = r.out.find("parent exits\n");
        auto late = r.out.find("child late line\n");
        CHECK(exits != std::string::npos);
        CHECK(late != std::string::npos);
        CHECK(late > exits);
        CHECK(lines_with(r.err, "child late stderr line").size() == 1);
        CHECK(lines_with(r.out, "child gave up").empty());
        CHECK(hosts.wait_for_events("a", "forked_child_ended"));
        auto ended = hosts.events("a", "forked_child_ended");
        REQUIRE(ended.size() == 1);
        CHECK(ended[0]["status"] == "0");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("without forward_stdin the child reads end of file at once and the parent keeps its stdin") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        {
            auto r = hosts.run("a", {"/bin/sh", "-c", "printf 'hello\\nworld\\n' | exec \"$0\" stdin b:7000 noforward",
                                     program_path(child_program)});
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            REQUIRE(r.status == 0);
            auto child = only_line(r.out, "child stdin ");
            CHECK(field(child, "eof") == "1");
            CHECK(field(child, "bytes") == "0");
            CHECK(std::stol(field(child, "ms")) < 2000);  // at once, not at the end of its 10 s
            auto parent = only_line(r.out, "parent stdin ");
            CHECK(field(parent, "eof") == "1");
            CHECK(field(parent, "data") == "hello\\nworld\\n");
            CHECK(field(only_line(r.out, "parent waited "), "status") == "0");
        }
        // A parent whose stdin is /dev/null (the harness's): the same.
        auto null = hosts.run("a", {program_path(child_program), "stdin", "b:7000", "noforward"});
        INFO("stdout: " << null.out << "\nstderr: " << null.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(null.status == 0);
        auto child = only_line(null.out, "child stdin ");
        CHECK(field(child, "eof") == "1");
        CHECK(field(child, "bytes") == "0");
        // At once: well within the 10 s its read may take.
        CHECK(std::stol(field(child, "ms")) < 2000);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("with forward_stdin the child reads the parent's stdin to its end") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {"/bin/sh", "-c", "printf 'hello\\nworld\\n' | exec \"$0\" stdin b:7000 forward",
                                 program_path(child_program)});
        {
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            REQUIRE(r.status == 0);
            auto child = only_line(r.out, "child stdin ");
            CHECK(field(child, "eof") == "1");
            CHECK(field(child, "bytes") == "12");
            CHECK(field(child, "data") == "hello\\nworld\\n");
            CHECK(field(only_line(r.out, "parent waited "), "status") == "0");
        }
        // A parent whose stdin is /dev/null (the harness's): the child reads its end.
        auto null = hosts.run("a", {program_path(child_program), "stdin", "b:7000", "forward"});
        INFO("stdout: " << null.out << "\nstderr: " << null.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(null.status == 0);
        auto child = only_line(null.out, "child stdin ");
        CHECK(field(child, "eof") == "1");
        CHECK(field(child, "bytes") == "0");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("a forwarded stdin that is a silent socket holds up neither the agent nor other forks") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        // The program's stdin is one end of a socket pair; the test holds the
        // other, and says nothing until the checks below are done. CRIU finds
        // unix sockets in the process's own network namespace: a's.
        int pair[2] = {-1, -1};
        hosts.in_network("a", [&] { ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair); });
        REQUIRE(pair[0] >= 0);
        auto program = hosts.start("a", {program_path(child_program), "stdin", "b:7000", "forward", "120"}, {}, false,
                                   pair[0]);
        ::close(pair[0]);
        bool restored = hosts.wait_for_events("b", "child_restored");
        // While a's agent waits on that socket for the child's stdin, it
        // forks another program and answers rfork-agent list.
        auto other = hosts.run("a", {program_path("fork_or_report"), "b:7000"}, {}, 60s);
        auto list = hosts.run("a", {program_path("rfork-agent"), "list"}, {}, 30s);
        // Then the socket speaks and ends: the child reads all of it.
        const std::string hello = "hello\n";
        auto written = ::send(pair[1], hello.data(), hello.size(), MSG_NOSIGNAL);
        ::close(pair[1]);
        auto r = program.finish(120s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\nother fork: " << other.out << other.err
                        << "\nlist on a: " << list.out << list.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(restored);
        CHECK(other.status == 0);
        CHECK(lines_with(other.out, "parent id=").size() == 1);
        CHECK(list.status == 0);
        CHECK(lines_of(list.out).size() == 1);  // the header: a runs no child
        CHECK(written == static_cast<ssize_t>(hello.size()));
        REQUIRE(r.status == 0);
        auto child = only_line(r.out, "child stdin ");
        CHECK(field(child, "eof") == "1");
        CHECK(field(child, "data") == "hello\\n");
        auto waited = only_line(r.out, "parent waited ");
        CHECK(field(waited, "status") == "0");
        // The agent waited on the socket without making it non-blocking: its open file is the parent's too.
        CHECK(field(waited, "stdin_nonblocking") == "0");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("the agent never writes the child's output into a parent's stdout that is open only for reading") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        auto report_path = dir.path + "/report";
        auto r = hosts.run("a", {program_path(child_program), "readonly-stdout", "b:7000", report_path});
        auto report = read_file(report_path);
        INFO("program status: " << r.status << "\nreport: " << report << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        // The fork worked: the parent got the child's own exit code.
        CHECK(field(only_line(report, "parent waited "), "status") == "7");
        // And its stdout, a pipe's read end, holds nothing once the child has ended.
        auto held = only_line(report, "parent stdout ");
        CHECK(field(held, "bytes") == "0");
        CHECK(field(held, "data") == "");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("the child's output reaches a parent's stdout and stderr that are regular files") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        auto out_path = dir.path + "/out", err_path = dir.path + "/err";
        const int lines_out = 300, lines_err = 200;
        auto r = hosts.run("a", {"/bin/sh", "-c", "exec \"$0\" \"$@\" >\"$RFORK_TEST_OUTPUT\" 2>\"$RFORK_TEST_ERRORS\"",
                                 program_path(child_program), "output", "b:7000", std::to_string(lines_out),
                                 std::to_string(lines_err)},
                           {{"RFORK_TEST_OUTPUT", out_path}, {"RFORK_TEST_ERRORS", err_path}});
        auto out = read_file(out_path), err = read_file(err_path);
        INFO("status: " << r.status << "\nstderr file: " << err.substr(0, 2000) << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto forked = only_line(out, "parent forked id=");
        std::string expected_out = "parent before fork\n";
        for (int i = 0; i < lines_out; ++i) expected_out += "out " + std::to_string(i) + "\n";
        expected_out += forked + "\nparent waited status=0\n";
        bool same_out = out == expected_out;
        CHECK_MESSAGE(same_out, "stdout file: " << describe_difference(out, expected_out));
        std::string expected_err = "parent stderr before fork\n";
        for (int i = 0; i < lines_err; ++i) expected_err += "err " + std::to_string(i) + "\n";
        expected_err += "parent stderr waited\n";
        bool same_err = err == expected_err;
        CHECK_MESSAGE(same_err, "stderr file: " << describe_difference(err, expected_err));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("with forward_stdin the child reads a parent's stdin that is a regular file to its end") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        shared_dir dir;
        auto input = dir.path + "/input";
        std::ofstream(input) << "from\na file\n";
        auto r = hosts.run("a", {"/bin/sh", "-c", "exec \"$0\" stdin b:7000 forward <\"$RFORK_TEST_INPUT\"",
                                 program_path(child_program)},
                           {{"RFORK_TEST_INPUT", input}});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto child = only_line(r.out, "child stdin ");
        CHECK(field(child, "eof") == "1");
        CHECK(field(child, "data") == "from\\na\\sfile\\n");
        CHECK(field(only_line(r.out, "parent waited "), "status") == "0");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("rfork-agent list shows a running child on its host and rfork-agent kill ends it") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        const auto agent = program_path("rfork-agent");
        auto program = hosts.start("a", {program_path(child_program), "block", "b:7000"});
        std::string id;
        bool restored = hosts.wait_for_events("b", "child_restored");
        REQUIRE(restored);
        auto ids = restored_ids(hosts, "b");
        REQUIRE(ids.size() == 1);
        id = ids[0];
        auto list = hosts.run("b", {agent, "list"});
        auto list_on_a = hosts.run("a", {agent, "list"});
        auto killed = hosts.run("b", {agent, "kill", id});
        auto r = program.finish(60s);
        INFO("parent stdout: " << r.out << "\nparent stderr: " << r.err << "\nlist on b: " << list.out << list.err
                               << "\nkill on b: " << killed.out << killed.err << agent_logs(hosts, {"a", "b"}));

        // While it ran: a header and one line, the child's.
        CHECK(list.status == 0);
        auto lines = lines_of(list.out);
        REQUIRE(lines.size() == 2);
        CHECK(words(lines[0]) == std::vector<std::string>{"ID", "ORIGIN", "PID", "STATE", "AGE"});
        auto child = words(lines[1]);
        REQUIRE(child.size() == 5);
        CHECK(child[0] == id);
        CHECK(child[1] == "a");
        CHECK(child[3] == "running");
        // Host a runs no child: only the header.
        CHECK(list_on_a.status == 0);
        CHECK(lines_of(list_on_a.out).size() == 1);

        // rfork-agent kill sent SIGTERM, as the parent's wait saw.
        CHECK(killed.status == 0);
        CHECK(r.status == 0);
        auto forked = only_line(r.out, "parent forked id=");
        CHECK(field(forked, "id") == id);
        CHECK(field(forked, "pid") == child[2]);  // the pid the parent was told, in the child's own pid namespace
        CHECK(field(only_line(r.out, "parent waited "), "status") == "143");
        CHECK(lines_with(r.out, "child gave up").empty());

        // Once it ended, b lists nothing and cannot kill it.
        REQUIRE(hosts.wait_for_events("b", "child_ended"));
        auto after = hosts.run("b", {agent, "list"});
        CHECK(after.status == 0);
        CHECK(lines_of(after.out) == std::vector<std::string>{lines[0]});
        auto again = hosts.run("b", {agent, "kill", id});
        CHECK(again.status != 0);
        CHECK(again.err.find(id) != std::string::npos);

        auto nosuch = hosts.run("b", {agent, "kill", "nosuchid"});
        INFO("kill nosuchid: status " << nosuch.status << " stdout: " << nosuch.out << " stderr: " << nosuch.err);
        CHECK(nosuch.status != 0);
        CHECK(nosuch.out.empty());
        CHECK(nosuch.err.find("nosuchid") != std::string::npos);
        CHECK(nosuch.err.find("no child") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a chain a to b and back to a keeps the memory and leaves nothing behind") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        check_chain(hosts, {"a", "b"}, "b", "a");
    }

    TEST_CASE("a chain whose child forks while its memory still arrives keeps the memory") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        // 256 MiB: lazy pages, still on their way when the child forks again
        // (its agent waits for them before it dumps the child's snapshot).
        check_chain(hosts, {"a", "b"}, "b", "a", "256");
        // b's events, in the order its agent wrote them: the child from a
        // asked to fork before the last of its memory had arrived.
        auto events = hosts.events("b");
        auto at = [&](const std::string& name, const std::string& key, const std::string& value) {
            auto found = std::find_if(events.begin(), events.end(),
                                      [&](const agent_event& e) { return e.name == name && e[key] == value; });
            return found == events.end() ? std::ptrdiff_t(-1) : found - events.begin();
        };
        auto restored = hosts.events("b", "child_restored");
        REQUIRE(restored.size() == 1);
        INFO(agent_logs(hosts, {"b"}));
        CHECK(at("image_receiving", "lazy", "1") >= 0);
        auto complete = at("image_complete", "id", restored[0]["id"]);
        auto second_fork = at("fork_request", "endpoint", "a:7000");
        CHECK(second_fork >= 0);
        CHECK(complete > second_fork);
    }

    TEST_CASE("a chain a to b to c keeps the memory and leaves nothing behind") {
        require_fork_environment();
        test_hosts hosts({"a", "b", "c"});
        check_chain(hosts, {"a", "b", "c"}, "b", "c");
    }
}
