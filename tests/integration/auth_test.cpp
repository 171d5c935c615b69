// Only agents that hold the same secret fork to each other: TLS 1.3 with that
// secret as a pre-shared key. Anyone else is refused before a byte of rfork's
// protocol is read, and nothing is restored.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

using namespace rfork::test;
namespace fs = std::filesystem;

TEST_SUITE("integration.auth") {
    TEST_CASE("keygen makes a private secret and never overwrites one") {
        require_fork_environment();
        temp_dir dir("auth");
        auto secret = (dir.path / "secret").string();
        auto made = running_program({program_path("rfork-agent"), "keygen", secret}).finish(30s);
        CHECK(made.status == 0);
        struct stat st {};
        REQUIRE(::stat(secret.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0600);
        CHECK(read_file(secret).size() == 65);  // 32 bytes in hex, and a newline
        auto before = read_file(secret);
        auto again = running_program({program_path("rfork-agent"), "keygen", secret}).finish(30s);
        CHECK(again.status == 1);
        CHECK(again.err.find("File exists") != std::string::npos);
        CHECK(read_file(secret) == before);

        // An agent refuses a secret others can read.
        ::chmod(secret.c_str(), 0644);
        auto agent = running_program({program_path("rfork-agent"), "--listen", "7999", "--secret-file", secret,
                                      "--socket", (dir.path / "agent.sock").string(), "--work-dir",
                                      (dir.path / "work").string()})
                         .finish(30s);
        INFO("stderr: " << agent.err);
        CHECK(agent.status == 1);
        CHECK(agent.err.find("readable by others") != std::string::npos);
    }

    TEST_CASE("agents with the same secret fork over TLS") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        CHECK(hosts.agent_log("b").find("agents must prove the secret") != std::string::npos);
        CHECK(hosts.agent_log("b").find("INSECURE") == std::string::npos);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an agent with another secret is refused and nothing is restored") {
        require_fork_environment();
        temp_dir dir("auth");
        auto other = (dir.path / "other-secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", other}).finish(30s).status == 0);
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--secret-file " + other}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find("--secret-file") != std::string::npos);
        CHECK(hosts.wait_for_log("b", [](const std::string& log) { return log.find("no TLS with the shared secret") != std::string::npos; }));
        CHECK(hosts.agent_log("b").find("receiving an image") == std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a plain TCP peer gets nothing from a TLS agent and forks keep succeeding") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        for (const char* mode : {"garbage", "version", "truncated"}) {
            CAPTURE(mode);
            auto r = hosts.run("a", {program_path("raw_peer"), hosts.address("b"), "7000", mode});
            INFO("stdout: " << r.out << "\nstderr: " << r.err);
            CHECK(r.status == 0);
            CHECK(lines_with(r.out, "handshake ").empty());  // no rfork answer at all
            CHECK(lines_with(r.out, "error code=").empty());
        }
        CHECK(hosts.agent_log("b").find("receiving an image") == std::string::npos);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a receiver restores processes of root only when started with --allow-root") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.allow_root = false});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::not_permitted);
        CHECK(error.find("--allow-root") != std::string::npos);
        CHECK(hosts.agent_log("b").find("restored") == std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a receiver limited to some uids refuses others") {
        require_fork_environment();
        // The programs here run as root; uids 4242 and 4343 are allowed, root is not.
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--allow-uid 4242,4343"}, .allow_root = false});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto error = expect_failed_fork(r, rfork::errc::not_permitted);
        CHECK(error.find("uid 0") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});

        auto bad = running_program({program_path("rfork-agent"), "--listen", "7999", "--allow-uid", "0,5"}).finish(30s);
        CHECK(bad.status == 2);
        CHECK(bad.err.find("--allow-uid takes uids other than 0") != std::string::npos);
    }

    TEST_CASE("only root and the --local-users may use the local socket") {
        require_fork_environment();
        auto as_user = [](const char* uid, std::vector<std::string> argv) {
            std::vector<std::string> all{"/usr/bin/setpriv", std::string("--reuid=") + uid, std::string("--regid=") + uid,
                                         "--clear-groups", "--"};
            all.insert(all.end(), argv.begin(), argv.end());
            return all;
        };
        SUBCASE("by default the socket is root's alone") {
            test_hosts hosts({"a", "b"});
            auto r = hosts.run("a", as_user("4242", {program_path("fork_or_report"), "b:7000"}));
            auto error = expect_failed_fork(r, rfork::errc::agent_not_found);
            CHECK(error.find("Permission denied") != std::string::npos);
        }
        SUBCASE("a listed user's request is taken") {
            // Its fork itself fails on this machine, whose root lacks
            // CAP_SYS_RESOURCE: CRIU cannot read another user's rlimits here.
            test_hosts hosts({"a", "b"}, {.agent_args = {"a=--local-users 4242", "b=--allow-uid 4242"}});
            auto r = hosts.run("a", as_user("4242", {program_path("fork_or_report"), "b:7000"}));
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            CHECK(hosts.agent_log("a").find("fork request from pid") != std::string::npos);
            CHECK(hosts.agent_log("a").find("(uid 4242) to b:7000") != std::string::npos);
            CHECK(r.out.find("may not use this agent") == std::string::npos);
            check_nothing_left(hosts, {"a", "b"}, {});
        }
        SUBCASE("another user is refused by the agent") {
            test_hosts hosts({"a", "b"}, {.agent_args = {"a=--local-users 4242"}});
            auto r = hosts.run("a", as_user("4343", {program_path("fork_or_report"), "b:7000"}));
            auto error = expect_failed_fork(r, rfork::errc::not_permitted);
            CHECK(error.find("uid 4343 may not use this agent") != std::string::npos);
        }
    }

    TEST_CASE("agents with certificates of one authority fork over TLS") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.certificates = true});
        CHECK(hosts.agent_log("b").find("must show a certificate signed by") != std::string::npos);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an agent whose certificate another authority signed is refused and nothing is restored") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        const auto agent = program_path("rfork-agent");
        REQUIRE(running_program({agent, "keygen", "--ca", pki}).finish(30s).status == 0);
        REQUIRE(running_program({agent, "keygen", "--host", "b", "--ca", pki, pki}).finish(30s).status == 0);
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--cert " + pki + "/b.crt --key " + pki + "/b.key --ca " + pki +
                                                     "/ca.crt"},
                                      .certificates = true});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find("no TLS with the agent at b:7000") != std::string::npos);
        CHECK(hosts.wait_for_log("b", [](const std::string& log) { return log.find("no TLS") != std::string::npos; }));
        CHECK(hosts.agent_log("b").find("receiving an image") == std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }
}
