// Forks that cannot happen fail clearly, the parent goes on, and the agents
// keep nothing and keep serving.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <filesystem>
#include <fstream>

using namespace rfork::test;

TEST_SUITE("integration.failure") {
    TEST_CASE("a fork to a port where no agent listens fails clearly and the parent goes on") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7999"});
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find("b:7999") != std::string::npos);
        CHECK(error.find("Connection refused") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("without a local agent the error names the socket path") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"},
                           {{"RFORK_AGENT_SOCKET", "/run/rfork/no-agent-here.sock"}});
        auto error = expect_failed_fork(r, rfork::errc::agent_not_found);
        CHECK(error.find("/run/rfork/no-agent-here.sock") != std::string::npos);
        CHECK(hosts.events("a", "fork_request").empty());
    }

    TEST_CASE("a bad endpoint is refused before anything happens") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fork_or_report"), "no-port-here"});
        auto error = expect_failed_fork(r, rfork::errc::bad_endpoint);
        CHECK(error.find("no-port-here") != std::string::npos);
        CHECK(hosts.events("a", "fork_request").empty());
    }

    TEST_CASE("a process CRIU cannot checkpoint gets CRIU's own reason and goes on") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000", "--hold-io-uring"});
        auto error = expect_failed_fork(r, rfork::errc::dump_failed);
        CHECK(error.find("Error (criu/") != std::string::npos);  // CRIU's own line
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a restore that fails on the other host reports CRIU's reason there and leaves nothing") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        // A directory both hosts have (each its own /run/rfork, a tmpfs), of
        // another mode on b: it is b's own, and CRIU refuses its mode.
        REQUIRE(hosts.run("a", {"/usr/bin/mkdir", "-m", "0700", "/run/rfork/held"}).status == 0);
        REQUIRE(hosts.run("b", {"/usr/bin/mkdir", "-m", "0755", "/run/rfork/held"}).status == 0);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000", "--hold-file", "/run/rfork/held"});
        INFO("b's log: " << hosts.agent_log("b"));
        auto error = expect_failed_fork(r, rfork::errc::restore_failed);
        CHECK(error.find("held") != std::string::npos);  // CRIU names the file
        CHECK(error.find("bad mode") != std::string::npos);
        CHECK(error.find("b:7000") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("peers speaking garbage or another version or the wrong role are refused and the agent keeps serving") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        struct expectation {
            const char* mode;
            rfork::errc code;
        };
        for (auto [mode, code] : {expectation{"garbage", rfork::errc::bad_magic},
                                  expectation{"version", rfork::errc::unsupported_version},
                                  expectation{"role", rfork::errc::unexpected_role},
                                  expectation{"truncated", rfork::errc::truncated}}) {
            CAPTURE(mode);
            // Inside TLS with the hosts' secret: what the protocol parser sees.
            auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, mode);
            INFO("stdout: " << r.out << "\nstderr: " << r.err);
            CHECK(r.status == 0);
            auto errors = lines_with(r.out, "error code=");
            REQUIRE(errors.size() == 1);
            CHECK(field(errors[0], "code") == error_value(code));
            CHECK(lines_with(r.out, "handshake version=" + std::to_string(rfork::protocol::protocol_version) + " role=3").size() == 1);
            CHECK(lines_with(r.out, "answer undecodable").empty());
        }
        check_nothing_left(hosts, {"a", "b"}, {});

        // And a real fork still works afterwards.
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(lines_with(r.out, "parent id=").size() == 1);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
    }

    TEST_CASE("an agent given a CRIU that is a script refuses to start and makes nothing") {
        // CRIU runs through an fd, where no #! script can run: refused at
        // start, not at the first fork.
        require_fork_environment();
        temp_dir dir("criu-script");
        auto script = (dir.path / "criu").string();
        {
            std::ofstream out(script);
            out << "#!/bin/sh\nexec " << RFORK_AGENT_CRIU << " \"$@\"\n";
        }
        std::filesystem::permissions(script, std::filesystem::perms::owner_all);
        auto state = dir.path / "agent";
        auto r = running_program({program_path("rfork-agent"), "--listen", "127.0.0.1:7999", "--criu", script,
                                  "--socket", (state / "agent.sock").string(), "--work-dir", (state / "work").string()})
                     .finish(30s);
        INFO("stderr: " << r.err);
        CHECK(r.status == 1);
        CHECK(r.err.find("no usable CRIU binary at " + script) != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(state));  // no socket, secret or work dir
    }
}

