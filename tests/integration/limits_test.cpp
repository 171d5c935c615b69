// The agent's limits and its refusal to listen beyond loopback without
// credentials: each limit has a default and a flag, and whoever hits it gets a
// clear error, while the agent keeps nothing and keeps serving.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <unistd.h>

#include <filesystem>

using namespace rfork::test;

namespace {

// raw_peer's decoded answer: the agent's handshake and one error of `expected`.
std::string refusal_line(const run_result& r, rfork::errc expected) {
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.status == 0);
    CHECK(lines_with(r.out, "handshake version=" + std::to_string(rfork::protocol::protocol_version) + " role=3").size() == 1);
    auto errors = lines_with(r.out, "error code=");
    REQUIRE(errors.size() == 1);
    CHECK(field(errors[0], "code") == error_value(expected));
    return errors[0];
}

}  // namespace

TEST_SUITE("integration.limits") {
    TEST_CASE("without credentials the agent refuses to listen beyond loopback and --insecure is gone") {
        require_fork_environment();
        auto dir = std::filesystem::temp_directory_path() / ("rfork-no-credentials-" + std::to_string(::getpid()));
        std::vector<std::string> argv{program_path("rfork-agent"), "--listen",   "0.0.0.0:7999",
                                      "--socket",                  (dir / "agent.sock").string(),
                                      "--work-dir",                (dir / "work").string()};
        auto r = running_program(argv).finish(30s);
        INFO("stderr: " << r.err);
        CHECK(r.status == 2);
        CHECK(r.err.find("refusing to listen on 0.0.0.0:7999 without credentials") != std::string::npos);
        CHECK(r.err.find("--secret-file") != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(dir));  // it changed nothing

        // The way out that once was: plain TCP for anyone who reaches the port.
        argv.push_back("--insecure");
        auto insecure = running_program(argv).finish(30s);
        INFO("stderr: " << insecure.err);
        CHECK(insecure.status == 2);
        CHECK(insecure.err.find("--insecure was removed") != std::string::npos);
        CHECK(insecure.err.find("rfork-agent keygen") != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(dir));
    }

    TEST_CASE("a peer that sends nothing is cut off after the handshake timeout") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--handshake-timeout 1"}});
        // Inside TLS with the hosts' secret: the agent's own timeout, not TLS's.
        auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, "silent");
        auto line = refusal_line(r, rfork::errc::timed_out);
        CHECK(line.find("--handshake-timeout") != std::string::npos);
        // It still serves others.
        auto fork = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << fork.out << "\nstderr: " << fork.err);
        CHECK(lines_with(fork.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an image that stalls is dropped after the idle timeout and leaves nothing") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--idle-timeout 1"}});
        auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, "stall");
        auto line = refusal_line(r, rfork::errc::timed_out);
        CHECK(line.find("--idle-timeout") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("an image over the receiver's maximum size is refused with a clear error") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--max-image-size 100000"}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("--max-image-size 100000") != std::string::npos);
        CHECK(line.find("b:7000") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a receiver at its maximum of concurrent restores refuses with a clear error") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--max-restores 0"}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("busy") != std::string::npos);
        CHECK(line.find("--max-restores 0") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("bad limits on the command line are refused") {
        require_fork_environment();
        for (auto args : {std::vector<std::string>{"--handshake-timeout", "0"},
                          std::vector<std::string>{"--idle-timeout", "x"},
                          std::vector<std::string>{"--max-image-size", "-1"},
                          std::vector<std::string>{"--max-restores", "1e3"}}) {
            std::vector<std::string> argv{program_path("rfork-agent"), "--listen", "7999"};
            argv.insert(argv.end(), args.begin(), args.end());
            auto r = running_program(argv).finish(30s);
            CAPTURE(args[0]);
            INFO("stderr: " << r.err);
            CHECK(r.status == 2);
            CHECK(r.err.find(args[0] + " takes a whole number") != std::string::npos);
        }
    }
}
