// The pure part of a restore on the receiving host: the child's new stdio,
// its namespace init's command line and what that init's lines mean.
#include "receive/restore_plan.hpp"

#include "receive/ns_init.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <ostream>  // doctest prints a std::error_code through it

using namespace rfork::agent;
using rfork::protocol::output_stream;

TEST_SUITE("unit.restore_plan") {
    TEST_CASE("three pipes give three ends") {
        auto plan = plan_stdio({"pipe:[10]", "pipe:[11]", "pipe:[12]"});
        REQUIRE(plan.size() == 3);
        CHECK(plan[0].fd == 0);
        CHECK(plan[0].is_stdin);
        CHECK(plan[0].child_reads);
        CHECK_FALSE(plan[0].output);
        CHECK(plan[1].key == "pipe:[11]");
        CHECK_FALSE(plan[1].child_reads);
        CHECK(plan[1].output == output_stream::stdout_stream);
        CHECK(plan[2].output == output_stream::stderr_stream);
        CHECK_FALSE(plan[2].terminal);
    }

    TEST_CASE("stdout and stderr on one file share one end") {
        auto plan = plan_stdio({"pipe:[10]", "pipe:[11]", "pipe:[11]"});
        REQUIRE(plan.size() == 2);
        CHECK(plan[1].fd == 1);
        CHECK(plan[1].output == output_stream::stdout_stream);
    }

    TEST_CASE("a terminal is replaced by one terminal for all it served") {
        auto plan = plan_stdio({"tty[8800:1a]", "tty[8800:1a]", "tty[8800:1a]"});
        REQUIRE(plan.size() == 1);
        CHECK(plan[0].terminal);
        CHECK_FALSE(plan[0].child_reads);  // a terminal's one end is the child's, stdin too
        CHECK(plan[0].is_stdin);
        CHECK(plan[0].output == output_stream::stdout_stream);
    }

    TEST_CASE("closed stdio and files kept as they are get no end") {
        auto plan = plan_stdio({"", "pipe:[11]", ""});
        REQUIRE(plan.size() == 1);
        CHECK(plan[0].fd == 1);
        CHECK_FALSE(plan[0].is_stdin);
    }

    TEST_CASE("the namespace init runs the restore as root or as a user") {
        auto root = ns_init_command("/criu", {{4, "socket:[9]"}}, false, std::nullopt, std::nullopt);
        REQUIRE(root.size() > 7);
        CHECK(root[0] == "/proc/self/exe");
        CHECK(root[1] == "ns-init");
        CHECK(root[2] == std::to_string(status_fd_in_init));
        CHECK(root[3] == "root");
        CHECK(root[4] == "-");
        CHECK(root[5] == "--");
        CHECK(root[6] == "/criu");
        CHECK(root[7] == "restore");
        CHECK(std::find(root.begin(), root.end(), "fd[4]:socket:[9]") != root.end());
        CHECK(std::find(root.begin(), root.end(), "--unprivileged") == root.end());

        run_as user{1000, 1000, {1000}, criu_restore_capabilities};
        auto as_user = ns_init_command("/criu", {}, false, user, ns_init_plan_fd);
        CHECK(as_user[3] == to_argument(user));
        CHECK(as_user[4] == std::to_string(ns_init_plan_fd));
        CHECK(std::find(as_user.begin(), as_user.end(), "--unprivileged") != as_user.end());
    }

    TEST_CASE("the init's lines are read by their first word") {
        auto restored = parse_init_status("restored 42");
        CHECK(restored.what == init_status::kind::restored);
        CHECK(restored.number == 42);
        auto exited = parse_init_status("exited 256");
        CHECK(exited.what == init_status::kind::exited);
        CHECK(exited.number == 256);
        auto failed = parse_init_status("failed cannot mount /proc: Permission denied");
        CHECK(failed.what == init_status::kind::failed);
        CHECK(failed.text == "cannot mount /proc: Permission denied");
        CHECK(parse_init_status("criu-failed 1").what == init_status::kind::criu_failed);
        auto files = parse_init_status("files-failed the plan does not decode");
        CHECK(files.what == init_status::kind::files_failed);
        CHECK(files.text == "the plan does not decode");
        CHECK(parse_init_status("").what == init_status::kind::none);
        CHECK(parse_init_status("restored").what == init_status::kind::none);
        CHECK(parse_init_status("restoredx 1").what == init_status::kind::none);
        CHECK(parse_init_status("restored x").number == 0);
    }

    TEST_CASE("a failed restore tells the sender why") {
        auto files = restore_failure(parse_init_status("files-failed cannot read the plan"), "unused");
        CHECK(files.first == rfork::errc::file_unavailable);
        CHECK(files.second == "cannot give the child the files it uses: cannot read the plan");
        auto criu = restore_failure(parse_init_status("criu-failed 1"), "Error (criu/x.c:1): bad");
        CHECK(criu.first == rfork::errc::restore_failed);
        CHECK(criu.second == "CRIU could not restore the process: Error (criu/x.c:1): bad");
        auto init = restore_failure(parse_init_status("failed cannot fork: EAGAIN"), "unused");
        CHECK(init.second == "CRIU could not restore the process: cannot fork: EAGAIN");
        auto silent = restore_failure(parse_init_status(""), "unused");
        CHECK(silent.first == rfork::errc::restore_failed);
        CHECK(silent.second == "CRIU could not restore the process: its namespace init ended without a word");
    }
}
