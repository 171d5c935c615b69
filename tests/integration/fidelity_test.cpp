// What a forked child gets of its parent's state, each on a real fork a -> b:
// its threads keep running, a listening socket listens on the child's host,
// established connections are closed for the child but kept by the parent,
// unread pipe data and file offsets carry over. Each child reports what it
// sees on its stdout, which arrives in the parent's captured stdout.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace rfork::test;

namespace {

// A directory under /tmp, which every test host sees (they share the
// filesystem except /run/rfork); removed at the end.
struct scratch_dir {
    std::string path;
    scratch_dir() {
        char templ[] = "/tmp/rfork-fidelity-XXXXXX";
        REQUIRE(::mkdtemp(templ) != nullptr);
        path = templ;
    }
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;

    // Creates (or empties) a file here and returns its path; wait_for_file needs it to exist.
    std::string file(const std::string& name, const std::string& content = {}) const {
        std::string p = path + "/" + name;
        std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
        return p;
    }
};

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// The one line of `text` starting with `prefix`; fails the test if there is not exactly one.
// Once the child has ended, both hosts keep nothing of the fork.

}  // namespace

TEST_SUITE("integration.fidelity") {
    TEST_CASE("the child's threads all keep running with their thread-local and heap state") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fidelity_threads"), "b:7000"}, {}, 90s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\na's log: " << hosts.agent_log("a")
                        << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(r.status == 0);

        auto before_main = only_line(r.out, "before main_secret=");
        CHECK(field(before_main, "tasks") == "5");  // the main thread and four workers
        for (std::string side : {"child", "parent"}) {
            CAPTURE(side);
            auto main_line = only_line(r.out, side + " main_secret=");
            CHECK(field(main_line, "main_secret") == field(before_main, "main_secret"));
            CHECK(field(main_line, "tasks") == "5");
            CHECK(lines_with(r.out, side + " joined").size() == 1);
            for (int i = 0; i < 4; ++i) {
                CAPTURE(i);
                auto before = only_line(r.out, "before worker=" + std::to_string(i) + " ");
                auto after = only_line(r.out, side + " worker=" + std::to_string(i) + " ");
                // The worker answered from its own thread-local value and heap buffer: the ones it had.
                CHECK(field(after, "answered") == "1");
                CHECK(field(after, "secret") == field(before, "secret"));
                CHECK(field(after, "sum") == field(before, "sum"));
                CHECK(field(after, "tid") == field(before, "tid"));
                // Its counter went on from where it was, and kept moving after the fork.
                CHECK(std::stoull(field(after, "first")) >= std::stoull(field(before, "count")));
                CHECK(field(after, "advanced") == "1");
            }
        }
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a listening socket accepts connections on the child's host while the parent's still does") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        scratch_dir dir;
        auto status = dir.file("listening");
        const std::string port = "7101";
        auto program = hosts.start("a", {program_path("fidelity_listener"), "b:7000", port, status});
        // Each side says when it can accept: the child once restored, the parent once the fork returned.
        bool listening = wait_for_file(
            status, [](const std::string& s) { return contains(s, "child listening") && contains(s, "parent listening"); },
            60s);
        if (!listening) {
            auto early = program.finish(5s);
            INFO("status file: " << read_file(status) << "\nstdout: " << early.out << "\nstderr: " << early.err
                                 << "\na's log: " << hosts.agent_log("a") << "\nb's log: " << hosts.agent_log("b"));
            REQUIRE(listening);
        }

        // A client on b connects to b's own address: the child answers there.
        auto on_b = hosts.run("b", {program_path("fidelity_client"), hosts.address("b"), port, "hello-from-b"}, {}, 30s);
        // And one on a reaches the parent, still listening on a.
        auto on_a = hosts.run("a", {program_path("fidelity_client"), hosts.address("a"), port, "hello-from-a"}, {}, 30s);
        auto parent = program.finish(60s);
        INFO("client on b: " << on_b.out << on_b.err << "\nclient on a: " << on_a.out << on_a.err
                             << "\nprogram stdout: " << parent.out << "\nprogram stderr: " << parent.err
                             << "\na's log: " << hosts.agent_log("a") << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(parent.status == 0);

        CHECK(on_b.status == 0);
        auto greeting_b = only_line(on_b.out, "client got=");
        CHECK(field(greeting_b, "side") == "child");
        CHECK(field(greeting_b, "addrs") == hosts.address("b"));
        auto child = only_line(parent.out, "child accepted ");
        CHECK(field(child, "local") == hosts.address("b") + ":" + port);
        CHECK(field(child, "peer") == hosts.address("b"));
        CHECK(field(child, "got") == "hello-from-b");

        CHECK(on_a.status == 0);
        auto greeting_a = only_line(on_a.out, "client got=");
        CHECK(field(greeting_a, "side") == "parent");
        CHECK(field(greeting_a, "addrs") == hosts.address("a"));
        auto parent_line = only_line(parent.out, "parent accepted ");
        CHECK(field(parent_line, "local") == hosts.address("a") + ":" + port);
        CHECK(field(parent_line, "got") == "hello-from-a");

        CHECK(lines_with(parent.out, "parent waited status=0").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an established TCP connection is closed in the child and the parent keeps it both ways") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        scratch_dir dir;
        auto ready = dir.file("echo-ready");
        const std::string port = "7201";
        auto server = hosts.start("a", {program_path("fidelity_echo"), port, ready});
        bool serving = wait_for_file(ready, [](const std::string& s) { return contains(s, "ready"); }, 30s);
        if (!serving) {
            auto early = server.finish(5s);
            INFO("echo server stdout: " << early.out << "\nstderr: " << early.err);
            REQUIRE(serving);
        }

        auto r = hosts.run("a", {program_path("fidelity_tcp"), "b:7000", hosts.address("a"), port}, {}, 90s);
        auto echo = server.finish(30s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\necho server: " << echo.out << echo.err
                        << "\na's log: " << hosts.agent_log("a") << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(r.status == 0);
        CHECK(lines_with(r.out, "before echo=before").size() == 1);

        // The child's copy is closed: TCP_CLOSE (7), a read sees the end or an error, a write fails.
        auto child = only_line(r.out, "child state=");
        CHECK(field(child, "state") == "7");
        auto read = field(child, "read");
        CHECK((read == "eof" || read.starts_with("error:")));
        CHECK(field(child, "write").starts_with("error:"));

        // The parent's connection works both ways, right after the fork and after the child ended.
        CHECK(lines_with(r.out, "parent after-fork echo=parent-after-fork").size() == 1);
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        CHECK(lines_with(r.out, "parent after-child echo=parent-after-child").size() == 1);

        // The server saw exactly the parent's lines, none of the child's, and then the parent's close.
        CHECK(echo.status == 0);
        CHECK(lines_starting_with(echo.out, "echo got=") ==
              std::vector<std::string>{"echo got=before", "echo got=parent-after-fork", "echo got=parent-after-child"});
        CHECK(lines_with(echo.out, "echo end=eof").size() == 1);
        CHECK(!contains(echo.out, "child-write"));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("unread pipe data is in the child's pipe and still in the parent's") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fidelity_pipe"), "b:7000"}, {}, 60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\na's log: " << hosts.agent_log("a")
                        << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(r.status == 0);
        // Exactly the pending bytes, nothing more, on each side; the parent read after the child ended.
        CHECK(only_line(r.out, "child pipe=") == "child pipe=pending-data rest=empty");
        CHECK(only_line(r.out, "parent pipe=") == "parent pipe=pending-data rest=empty");
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an open file's offset carries over to the child and stays the parent's") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        scratch_dir dir;
        std::string content;
        for (int i = 0; i < 200; ++i) {
            char line[16];
            std::snprintf(line, sizeof line, "line-%04d\n", i);
            content += line;
        }
        auto path = dir.file("content", content);
        const std::size_t skip = 1003, count = 30;  // not on a line boundary
        std::string expected = content.substr(skip, count);
        for (auto& c : expected)
            if (c == '\n') c = '|';

        auto r = hosts.run("a", {program_path("fidelity_file"), "b:7000", path, std::to_string(skip), std::to_string(count)},
                           {}, 60s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << "\na's log: " << hosts.agent_log("a")
                        << "\nb's log: " << hosts.agent_log("b"));
        REQUIRE(r.status == 0);
        CHECK(field(only_line(r.out, "before offset="), "offset") == std::to_string(skip));
        std::string tail = " offset=" + std::to_string(skip) + " next=" + expected +
                           " offset_after=" + std::to_string(skip + count);
        CHECK(only_line(r.out, "child offset=") == "child" + tail);
        // The parent read after the child ended: the child's read did not move it.
        CHECK(only_line(r.out, "parent offset=") == "parent" + tail);
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }
}
