// Test hosts of their own files, as separate machines: each one's root is a
// layer of its own over the installed agent's root (a fresh Debian with the
// rfork-agent package alone, made once per ctest run), and its agent is the
// installed one. What such a host has and lacks, and forks onto it.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

// Whether `path` exists as `host` sees it, asked there.
bool exists_on(const test_hosts& hosts, const std::string& host, const std::string& path) {
    auto r = hosts.run(host, {"/usr/bin/test", "-e", path}, {}, 30s);
    INFO("test -e " << path << " on " << host << ": status " << r.status << " " << r.err);
    REQUIRE((r.status == 0 || r.status == 1));
    return r.status == 0;
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    REQUIRE(out.flush());
}

bool mounted_under(const fs::path& dir) {
    return !lines_with(read_file("/proc/self/mountinfo"), " " + dir.string()).empty();
}

// argv run with `dir` as its working directory (CRIU restores it: it must
// be on the other host too).
std::vector<std::string> in_dir(const fs::path& dir, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/bin/sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", dir.string()});
    return argv;
}

// Where programs are deployed, as a user puts them on each machine: a
// directory on this machine and, at the same path and with the same mode
// (CRIU checks it), in `host`'s root. Not under /tmp or /run, which a host
// of its own files has of its own.
struct deploy_dir {
    fs::path path, in_root;

    deploy_dir(const test_hosts& hosts, const std::string& host) {
        std::string pattern = "/var/tmp/rfork-own-files-XXXXXX";
        if (!::mkdtemp(pattern.data())) FAIL("mkdtemp failed");
        path = pattern;
        in_root = hosts.root_of(host) / path.relative_path();
        fs::create_directories(in_root);
        fs::permissions(in_root, fs::status(path).permissions());
    }
    ~deploy_dir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
        fs::remove_all(in_root, ignored);
    }
    deploy_dir(const deploy_dir&) = delete;
    deploy_dir& operator=(const deploy_dir&) = delete;

    // Copies `from` here as `name` (mode and all), and into the root too when `there`.
    std::string put(const std::string& from, const std::string& name, bool there) const {
        fs::copy_file(from, path / name);
        if (there) fs::copy_file(from, in_root / name);
        return (path / name).string();
    }
};

// The receiving agent's event about the files of its last child: how many
// were the host's own, cached, received, and the bytes received.
agent_event last_files(const test_hosts& hosts, const std::string& host) {
    auto events = hosts.events(host, "child_files");
    REQUIRE_FALSE(events.empty());
    return events.back();
}

// The entries of `host`'s file cache (its default place, in its own root).
std::vector<std::string> cache_entries(const test_hosts& hosts, const std::string& host) {
    std::vector<std::string> names;
    auto dir = hosts.root_of(host) / "var/cache/rfork/files";
    if (!fs::exists(dir)) return names;
    for (auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
    return names;
}

}  // namespace

TEST_SUITE("integration.own_files") {
    TEST_CASE("a host of its own files has the installed agent and its CRIU and nothing of the build tree") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        REQUIRE(hosts.root_of("a").empty());
        auto root = hosts.root_of("b");
        REQUIRE_FALSE(root.empty());

        // What only this machine has (the trees, this test, the programs it runs): a sees it, b does not.
        for (std::string path : {std::string(RFORK_SOURCE_DIR), std::string(RFORK_BINARY_DIR),
                                 fs::read_symlink("/proc/self/exe").string(), program_path("fork_or_report"),
                                 program_path("rfork-agent")}) {
            CAPTURE(path);
            CHECK(exists_on(hosts, "a", path));
            CHECK_FALSE(exists_on(hosts, "b", path));
            CHECK_FALSE(fs::exists(root / fs::path(path).relative_path()));
        }

        // b's agent is the installed program, and it answers at the default socket.
        CHECK(hosts.agent_program("b") == "/usr/bin/rfork-agent");
        CHECK(fs::equivalent("/proc/" + std::to_string(hosts.agent_pid("b")) + "/exe", root / "usr/bin/rfork-agent"));
        auto list = hosts.run("b", {hosts.agent_program("b"), "list"});
        INFO("list on b: " << list.out << list.err << agent_logs(hosts, {"b"}));
        CHECK(list.status == 0);
        // With the installed CRIU, which runs there.
        auto ready = hosts.events("b", "agent_ready");
        REQUIRE(ready.size() == 1);
        auto criu_path = ready[0]["criu"];
        CAPTURE(criu_path);
        CHECK((criu_path == "/usr/libexec/rfork/criu" || criu_path == "/usr/sbin/criu"));
        auto version = hosts.run("b", {criu_path, "--version"});
        CHECK(version.status == 0);
        CHECK(version.out.starts_with("Version: "));

        // The setup's secret, in b's own /etc/rfork, root's alone.
        auto secret = root / "etc/rfork/secret";
        CHECK(read_file(secret) == read_file(hosts.secret_file()));
        CHECK((fs::status(secret).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a file written on one host of its own files appears neither on another nor on this machine") {
        require_fork_environment();
        const auto base = installed_agent_root();
        const std::string path = "/var/lib/rfork-written-on-b-" + std::to_string(::getpid());
        const std::string other = "/var/lib/rfork-written-for-c-" + std::to_string(::getpid());
        fs::path b_root, c_root;
        {
            test_hosts hosts({"a", "b", "c"}, {.own_files = {"b", "c"}});
            b_root = hosts.root_of("b");
            c_root = hosts.root_of("c");
            REQUIRE_FALSE(b_root.empty());
            REQUIRE_FALSE(c_root.empty());
            CHECK(b_root != c_root);

            auto write = hosts.run("b", {"/bin/sh", "-c", "echo from-b > \"$0\"", path});
            INFO("write on b: " << write.err);
            REQUIRE(write.status == 0);
            CHECK(exists_on(hosts, "b", path));
            CHECK(read_file(b_root / fs::path(path).relative_path()) == "from-b\n");
            CHECK_FALSE(exists_on(hosts, "c", path));
            CHECK_FALSE(fs::exists(c_root / fs::path(path).relative_path()));
            CHECK_FALSE(exists_on(hosts, "a", path));
            CHECK_FALSE(fs::exists(path));
            CHECK_FALSE(fs::exists(base / fs::path(path).relative_path()));  // the shared lower layer is never written

            // And the other way: put into c's root from here, only c has it.
            write_file(c_root / fs::path(other).relative_path(), "for-c\n");
            CHECK(exists_on(hosts, "c", other));
            CHECK_FALSE(exists_on(hosts, "b", other));
            CHECK_FALSE(fs::exists(other));
            CHECK_FALSE(fs::exists(base / fs::path(other).relative_path()));
            check_nothing_left(hosts, {"a", "b", "c"}, {});
        }
        // 'down' unmounted both roots and removed what was written there.
        for (auto& root : {b_root, c_root}) {
            CAPTURE(root);
            CHECK_FALSE(mounted_under(root));
            CHECK_FALSE(fs::exists(root));
        }
        CHECK_FALSE(fs::exists(base / fs::path(path).relative_path()));
    }

    TEST_CASE("a program deployed on a host of its own files forks onto it and its child reads the parent's version of an open file") {
        require_fork_environment();
        // Its agent holds copies of the setup's credentials, either kind.
        for (bool certificates : {false, true}) {
            CAPTURE(certificates);
            test_hosts hosts({"a", "b"}, {.certificates = certificates, .own_files = {"b"}});
            deploy_dir deployed(hosts, "b");
            auto program = deployed.put(program_path("fidelity_file_static"), "fidelity_file", true);
            // The file the program holds open, at the same path on both with
            // other bytes on b: what the child reads after the fork is the
            // parent's, and b's own stays as it was.
            auto data = deployed.path / "data";
            write_file(data, "start:from-a\n");
            write_file(deployed.in_root / "data", "start:from-b\n");
            auto fds_b = hosts.agent_fds("b");

            auto r = hosts.run("a", in_dir(deployed.path, {program, "b:7000", data.string(), "6", "6"}));
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            REQUIRE(r.status == 0);
            CHECK(only_line(r.out, "child offset=") == "child offset=6 next=from-a offset_after=12");
            CHECK(only_line(r.out, "parent offset=") == "parent offset=6 next=from-a offset_after=12");
            CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
            CHECK(read_file(deployed.in_root / "data") == "start:from-b\n");
            // The program is b's own (the same file): only the data travelled.
            auto files = last_files(hosts, "b");
            CHECK(files["received"] == "1");
            CHECK(files["bytes"] == "13");
            CHECK(hosts.events("b", "child_restored").size() == 1);
            check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
            CHECK(hosts.agent_fds("b") == fds_b);
        }
    }

    TEST_CASE("a fork onto a host of its own files that lacks the program brings it and a second fork sends no file bytes") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        auto program = program_path("memory_probe");
        REQUIRE_FALSE(fs::exists(hosts.root_of("b") / fs::path(program).relative_path()));
        auto fds_b = hosts.agent_fds("b");
        // 64 MiB: a child that starts before its memory (lazy pages); 1 MiB: a whole image.
        for (std::string mib : {"64", "1"}) {
            CAPTURE(mib);
            auto parent = hosts.run("a", {program, "b:7000", mib});
            INFO("stdout: " << parent.out << "\nstderr: " << parent.err << agent_logs(hosts, {"a", "b"}));
            REQUIRE(parent.status == 0);
            auto parent_line = only_line(parent.out, "parent id=");
            // The child's line reaches the parent's stdout, as after fork().
            auto child_line = only_line(parent.out, "child id=");
            CHECK(field(child_line, "sum") == field(parent_line, "sum"));
            CHECK(field(child_line, "addrs") == hosts.address("b"));
            CHECK(field(child_line, "id") == field(parent_line, "id"));
        }
        // The first fork brought the program, the second found it in b's cache.
        auto files = hosts.events("b", "child_files");
        REQUIRE(files.size() == 2);
        CHECK(files[0]["received"] == "1");
        CHECK(std::stoull(files[0]["bytes"]) == fs::file_size(program));
        CHECK(files[1]["received"] == "0");
        CHECK(files[1]["bytes"] == "0");
        CHECK(files[1]["cached"] == "1");
        auto sent = hosts.events("a", "files_sent");
        REQUIRE(sent.size() == 1);
        CHECK(sent[0]["files"] == "1");
        // Nowhere in b's own files but its cache, named by its hash.
        CHECK_FALSE(fs::exists(hosts.root_of("b") / fs::path(program).relative_path()));
        CHECK(cache_entries(hosts, "b").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
        CHECK(hosts.agent_fds("b") == fds_b);
    }

    TEST_CASE("the silly example run from a terminal forks onto a host that lacks it and its child writes to that terminal") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        auto silly = program_path("silly");
        REQUIRE_FALSE(fs::exists(hosts.root_of("b") / fs::path(silly).relative_path()));
        auto parent = hosts.start("a", {silly, "b:7000"}, {}, true).finish(60s);
        INFO("parent terminal: " << parent.out << agent_logs(hosts, {"a", "b"}));
        REQUIRE(parent.status == 0);
        for (int i = 0; i < 10; ++i) {
            CHECK(parent.out.find("child " + std::to_string(i) + "\r\n") != std::string::npos);
            CHECK(parent.out.find("parent " + std::to_string(i) + "\r\n") != std::string::npos);
        }
        CHECK(lines_with(parent.out, "exited with status 0").size() == 1);
        CHECK(last_files(hosts, "b")["received"] == "1");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a host with another version of a mapped library gives the child the parent's") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        auto program = program_path("library_probe");
        // library_probe maps version 1; b holds version 2 at the very path.
        auto before = hosts.run("a", {program, "none:1"});
        auto path = field(only_line(before.out, "before version="), "path");
        REQUIRE(field(only_line(before.out, "before version="), "version") == "1");
        auto on_b = hosts.root_of("b") / fs::path(path).relative_path();
        fs::create_directories(on_b.parent_path());
        fs::copy_file(RFORK_PROBE_LIBRARY_V2, on_b);
        auto version_2 = read_file(RFORK_PROBE_LIBRARY_V2);

        auto r = hosts.run("a", {program, "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        auto parent = only_line(r.out, "parent version=");
        auto child = only_line(r.out, "child version=");
        CHECK(field(child, "version") == "1");
        CHECK(field(child, "path") == path);
        CHECK(field(child, "file_sum") == field(parent, "file_sum"));
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        // b's own version is untouched, and still what b's own programs see.
        CHECK(read_file(on_b) == version_2);
        CHECK(last_files(hosts, "b")["received"] == "2");  // the program and the library
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an open data file the host lacks arrives with its offset") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        deploy_dir here(hosts, "b");
        fs::remove_all(here.in_root);  // b has nothing of it, not even the directory
        auto data = here.path / "data";
        write_file(data, "0123456789abcdefghij");
        auto r = hosts.run("a", {program_path("fidelity_file"), "b:7000", data.string(), "10", "5"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        CHECK(only_line(r.out, "child offset=") == "child offset=10 next=abcde offset_after=15");
        CHECK(only_line(r.out, "parent offset=") == "parent offset=10 next=abcde offset_after=15");
        CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        CHECK_FALSE(fs::exists(here.in_root));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a file over the receiver's size limit fails the fork naming it and leaves nothing") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--max-file-size 4096"}, .own_files = {"b"}});
        auto program = program_path("fork_or_report");
        REQUIRE(fs::file_size(program) > 4096);
        auto fds_b = hosts.agent_fds("b");
        auto r = hosts.run("a", {program, "b:7000"});
        INFO("b's log: " << hosts.agent_log("b"));
        auto error = expect_failed_fork(r, rfork::errc::file_unavailable);
        CHECK(error.find(program) != std::string::npos);
        CHECK(error.find("--max-file-size 4096") != std::string::npos);
        CHECK(error.find("b:7000") != std::string::npos);
        CHECK(cache_entries(hosts, "b").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
        CHECK(hosts.agent_fds("b") == fds_b);
    }

    TEST_CASE("a peer's hostile file descriptions are refused and nothing is written") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--max-file-size 1000000"}, .own_files = {"b"}});
        struct hostile {
            std::string mode;
            rfork::errc expected;
            std::string says;
        };
        for (auto& h : {hostile{"files_dotdot", rfork::errc::malformed_message, "manifest"},
                        hostile{"files_huge", rfork::errc::file_unavailable, "--max-file-size 1000000"},
                        hostile{"files_bad_hash", rfork::errc::transfer_failed, "SHA-256"},
                        hostile{"files_overrun", rfork::errc::malformed_message, "beyond"}}) {
            CAPTURE(h.mode);
            auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, h.mode);
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"b"}));
            auto errors = lines_with(r.out, "error code=");
            REQUIRE(errors.size() == 1);
            CHECK(field(errors[0], "code") == error_value(h.expected));
            CHECK(errors[0].find(h.says) != std::string::npos);
            CHECK_FALSE(fs::exists(hosts.root_of("b") / "rfork-hostile"));
            CHECK(cache_entries(hosts, "b").empty());
        }
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a link on the host's path leads the child's files into its own namespace only") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.own_files = {"b"}});
        deploy_dir deployed(hosts, "b");
        auto program = deployed.put(program_path("fork_or_report"), "fork_or_report", false);
        // On b the program's directory is a link to /etc: the child finds its
        // program there, in a directory of its own; b's /etc gets nothing.
        fs::remove_all(deployed.in_root);
        fs::create_directory_symlink("/etc", deployed.in_root);
        auto etc_before = fs::directory_iterator(hosts.root_of("b") / "etc");
        std::vector<std::string> before;
        for (auto& e : etc_before) before.push_back(e.path().filename());
        auto r = hosts.run("a", {program, "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        REQUIRE(r.status == 0);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        CHECK(lines_with(r.out, "parent goes on").size() == 1);
        std::vector<std::string> after;
        for (auto& e : fs::directory_iterator(hosts.root_of("b") / "etc")) after.push_back(e.path().filename());
        std::sort(before.begin(), before.end());
        std::sort(after.begin(), after.end());
        CHECK(after == before);
        CHECK(fs::read_symlink(deployed.in_root) == "/etc");
        fs::remove(deployed.in_root);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }
}
