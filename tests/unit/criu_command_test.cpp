// How the agent runs CRIU (its command lines) and reads why it failed (its
// log), without running it.
#include "criu/criu.hpp"
#include "criu/criu_workspace.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace rfork::agent;

namespace {

// Whether `argv` holds `option` followed by `value`.
bool has_pair(const std::vector<std::string>& argv, const std::string& option, const std::string& value) {
    for (std::size_t i = 0; i + 1 < argv.size(); ++i)
        if (argv[i] == option && argv[i + 1] == value) return true;
    return false;
}

bool has(const std::vector<std::string>& argv, const std::string& option) {
    return std::find(argv.begin(), argv.end(), option) != argv.end();
}

// Every CRIU runs without a configuration file or plugins, in its workspace.
void check_workspace(const std::vector<std::string>& argv, const std::string& log) {
    CHECK(has(argv, "--no-default-config"));
    CHECK(has_pair(argv, "--libdir", criu_workspace::work_dir()));
    CHECK(has_pair(argv, "--images-dir", criu_workspace::images_dir()));
    CHECK(has_pair(argv, "--work-dir", criu_workspace::work_dir()));
    CHECK(has_pair(argv, "--log-file", log));
}

}  // namespace

TEST_SUITE("unit.criu_command") {
    TEST_CASE("a dump names the process its socket and its external stdio") {
        dump_request r;
        r.pid = 4242;
        r.socket_inode = 987654;
        r.externals = {"tty[8800:1a]", "unix[55]"};
        auto argv = dump_command("/usr/libexec/rfork/criu", r);
        REQUIRE(argv.size() > 2);
        CHECK(argv[0] == "/usr/libexec/rfork/criu");
        CHECK(argv[1] == "dump");
        check_workspace(argv, dump_log);
        CHECK(has_pair(argv, "--tree", "4242"));
        CHECK(has_pair(argv, "--external", "unix[987654]"));
        CHECK(has_pair(argv, "--external", "tty[8800:1a]"));
        CHECK(has_pair(argv, "--external", "unix[55]"));
        CHECK(has(argv, "--shell-job"));
        CHECK(has(argv, "--leave-running"));
        CHECK_FALSE(has(argv, "--unprivileged"));
        CHECK_FALSE(has(argv, "--tcp-established"));
        CHECK_FALSE(has(argv, "--lazy-pages"));
    }

    TEST_CASE("a snapshot's dump does not leave it running") {
        dump_request r;
        r.pid = 7;
        r.leave_running = false;
        r.unprivileged = true;
        auto argv = dump_command("criu", r);
        CHECK_FALSE(has(argv, "--leave-running"));
        CHECK(has(argv, "--unprivileged"));
    }

    TEST_CASE("a dump with connections locks the network and keeps them established") {
        dump_request r;
        r.pid = 7;
        r.tcp_connections = true;
        auto argv = dump_command("criu", r);
        CHECK(has(argv, "--tcp-established"));
        CHECK(has_pair(argv, "--network-lock", "nftables"));
    }

    TEST_CASE("a lazy dump serves its pages on the fds it is given") {
        dump_request r;
        r.pid = 7;
        r.lazy_ps_socket = 5;
        r.lazy_status_fd = 6;
        auto argv = dump_command("criu", r);
        CHECK(has(argv, "--lazy-pages"));
        CHECK(has_pair(argv, "--ps-socket", "5"));
        CHECK(has_pair(argv, "--status-fd", "6"));
    }

    TEST_CASE("a restore inherits each replaced file and ignores the image's cgroups") {
        auto argv = restore_command("criu", {{4, "socket:[99]"}, {5, "pipe:[1234]"}, {6, "tty[8800:1a]"}}, false, false);
        REQUIRE(argv.size() > 2);
        CHECK(argv[1] == "restore");
        check_workspace(argv, restore_log);
        CHECK(has_pair(argv, "--inherit-fd", "fd[4]:socket:[99]"));
        CHECK(has_pair(argv, "--inherit-fd", "fd[5]:pipe:[1234]"));
        CHECK(has_pair(argv, "--inherit-fd", "fd[6]:tty[8800:1a]"));
        CHECK(has(argv, "--restore-detached"));
        CHECK(has(argv, "--tcp-close"));
        CHECK(has(argv, "--manage-cgroups=ignore"));
        CHECK(has_pair(argv, "--pidfile", restored_pid_file));
        CHECK_FALSE(has(argv, "--lazy-pages"));
        CHECK_FALSE(has(argv, "--unprivileged"));
    }

    TEST_CASE("a user's lazy restore says so") {
        auto argv = restore_command("criu", {}, true, true);
        CHECK(has(argv, "--lazy-pages"));
        CHECK(has(argv, "--unprivileged"));
        CHECK_FALSE(has(argv, "--inherit-fd"));
    }

    TEST_CASE("the lazy-pages daemon talks on the fds it is given") {
        auto argv = lazy_pages_command("criu", 3, 4);
        REQUIRE(argv.size() > 2);
        CHECK(argv[1] == "lazy-pages");
        check_workspace(argv, lazy_pages_log);
        CHECK(has(argv, "--page-server"));
        CHECK(has_pair(argv, "--ps-socket", "3"));
        CHECK(has_pair(argv, "--status-fd", "4"));
    }
}

TEST_SUITE("unit.criu_error") {
    TEST_CASE("the first error of a log is the cause without its timestamp") {
        auto log = "(00.000000) Version: 4.2 (gitid 0)\n"
                   "(00.001234)   6294: Warn  (criu/kerndat.c:1180): Can't keep kdat cache on non-tempfs\n"
                   "(00.012345)   6294: Error (criu/files-reg.c:2197): Can't open file tmp/data.txt on restore: "
                   "No such file or directory\n"
                   "(00.012400)   6294: Error (criu/cr-restore.c:2441): Restoring FAILED.\n";
        CHECK(criu_error_line(log) ==
              "Error (criu/files-reg.c:2197): Can't open file tmp/data.txt on restore: No such file or directory");
    }

    TEST_CASE("a harmless RLIMIT_NOFILE error is passed over") {
        auto log = "(00.000100)   77: Error (criu/util.c:1010): Can't raise RLIMIT_NOFILE: Operation not permitted\n"
                   "(00.020000)   77: Error (criu/cr-restore.c:1500): 12 exited, status=1\n";
        CHECK(criu_error_line(log) == "Error (criu/cr-restore.c:1500): 12 exited, status=1");
    }

    TEST_CASE("without an error the last line says it without its timestamp") {
        auto log = "(00.000000) Version: 4.2 (gitid 0)\n"
                   "(00.300000) Dumping finished successfully\n\n";
        CHECK(criu_error_line(log) == "Dumping finished successfully");
    }

    TEST_CASE("an only error of RLIMIT_NOFILE is still better than nothing") {
        auto log = "(00.000100)   77: Error (criu/util.c:1010): Can't raise RLIMIT_NOFILE\n";
        CHECK(criu_error_line(log) == "Error (criu/util.c:1010): Can't raise RLIMIT_NOFILE");
    }

    TEST_CASE("an empty log is said to be empty") {
        CHECK(criu_error_line("") == "CRIU left no log");
        CHECK(criu_error_line("\n\n") == "CRIU left no log");
    }
}
