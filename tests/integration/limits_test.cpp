// The agent's limits and its refusal to listen beyond loopback without
// credentials: each limit has a default and a flag, and whoever hits it gets a
// clear error, while the agent keeps nothing and keeps serving.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

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

// A plain TCP connection from `host`'s network that never sends a byte, as a
// flood would open; closed with the object.
class idle_connection {
public:
    idle_connection(const test_hosts& hosts, const std::string& host, const std::string& address, std::uint16_t port) {
        hosts.in_network(host, [&] { fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
        REQUIRE(fd_ >= 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port);
        REQUIRE(::inet_pton(AF_INET, address.c_str(), &to.sin_addr) == 1);
        REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0);
    }
    idle_connection(idle_connection&& other) noexcept
        : fd_(std::exchange(other.fd_, -1)), closed_(other.closed_) {}
    idle_connection& operator=(idle_connection&&) = delete;
    ~idle_connection() {
        if (fd_ >= 0) ::close(fd_);
    }

    // Whether the agent closed or reset it (it never sends anything before
    // the client's TLS hello), without waiting.
    bool closed_by_peer() {
        if (!closed_) {
            char byte;
            auto n = ::recv(fd_, &byte, 1, MSG_DONTWAIT);
            closed_ = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        }
        return closed_;
    }
    int fd() const { return fd_; }

private:
    int fd_ = -1;
    bool closed_ = false;
};

// Waits until each of `which` was closed by the agent; false when `bound` ran out.
bool wait_closed(std::vector<idle_connection>& connections, const std::vector<std::size_t>& which,
                 std::chrono::milliseconds bound) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
        std::vector<pollfd> open;
        for (auto i : which)
            if (!connections[i].closed_by_peer()) open.push_back({connections[i].fd(), POLLIN | POLLRDHUP, 0});
        if (open.empty()) return true;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        ::poll(open.data(), open.size(), static_cast<int>(left.count()));
    }
}

// How many of `connections` the agent closed or reset once `count` of them
// are, or `bound` ran out.
std::size_t wait_closed_count(std::vector<idle_connection>& connections, std::size_t count,
                              std::chrono::milliseconds bound) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
        std::size_t closed = 0;
        std::vector<pollfd> open;
        for (auto& c : connections) {
            if (c.closed_by_peer()) ++closed;
            else open.push_back({c.fd(), POLLIN | POLLRDHUP, 0});
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (closed >= count || open.empty() || left.count() <= 0) return closed;
        ::poll(open.data(), open.size(), static_cast<int>(left.count()));
    }
}

// CPU time a process has used so far, user and system, all its threads.
std::chrono::milliseconds cpu_time(int pid) {
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // the name may hold spaces
    std::string field;
    unsigned long long ticks = 0;
    for (int n = 3; fields >> field; ++n)  // field 3 is the state; 14 and 15 utime and stime
        if (n == 14 || n == 15) ticks += std::stoull(field);
    return std::chrono::milliseconds(ticks * 1000 / static_cast<unsigned long long>(::sysconf(_SC_CLK_TCK)));
}

// Each forking program's report that its child ran.
void check_fork_succeeded(const run_result& r) {
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(lines_with(r.out, "child goes on").size() == 1);
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

    TEST_CASE("an image kept alive by frames within the idle timeout is refused at the image timeout") {
        // A frame every 200 ms never lets the idle timeout fire; the image's
        // own bound does. The one restore slot comes back: a fork follows.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"--idle-timeout 2 --image-timeout 3 --max-restores 1"}});
        auto started = std::chrono::steady_clock::now();
        auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, "trickle");
        auto took = std::chrono::steady_clock::now() - started;
        auto line = refusal_line(r, rfork::errc::timed_out);
        CHECK(line.find("--image-timeout") != std::string::npos);
        CHECK(took >= std::chrono::seconds(3));
        CHECK(hosts.work_dir_entries("b") == std::vector<std::string>{});
        auto fork = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        check_fork_succeeded(fork);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an image file larger than CRIU writes is refused as it is announced") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto r = hosts.raw_tls_peer("a", hosts.address("b"), 7000, "big_file");
        auto line = refusal_line(r, rfork::errc::limit_exceeded);
        CHECK(line.find("mm-1.img") != std::string::npos);
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

    TEST_CASE("an image of more files than the receiver accepts is refused with a clear error") {
        // Files cost an inode each, empty or not: a real image has a dozen or so.
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--max-image-files 5"}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("--max-image-files 5") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a receiver at its maximum of concurrent restores refuses with a clear error") {
        require_fork_environment();
        // The one place is held by an image that stalls (until --idle-timeout).
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--max-restores 1 --idle-timeout 5"}});
        run_result stalled;
        std::thread holder([&] { stalled = hosts.raw_tls_peer("a", hosts.address("b"), 7000, "stall"); });
        bool held = hosts.wait_for_events("b", "image_receiving");
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        holder.join();
        REQUIRE(held);
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("busy") != std::string::npos);
        CHECK(line.find("--max-restores 1") != std::string::npos);
        refusal_line(stalled, rfork::errc::timed_out);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("connections from one source beyond --max-pending-per-source are closed at once and others still fork") {
        require_fork_environment();
        // A handshake timeout long enough that the first connections surely
        // outlive what is checked while they pend.
        test_hosts hosts({"a", "b", "c"}, {.agent_args = {"b=--max-pending-per-source 3 --handshake-timeout 8"}});
        INFO(agent_logs(hosts, {"a", "b", "c"}));
        auto started = std::chrono::steady_clock::now();
        std::vector<idle_connection> idle;
        for (int i = 0; i < 5; ++i) idle.emplace_back(hosts, "a", hosts.address("b"), 7000);

        // The two beyond the cap: closed on arrival, before TLS.
        CHECK(wait_closed(idle, {3, 4}, 10s));
        // The first three pend, until the handshake timeout.
        for (std::size_t i = 0; i < 3; ++i) {
            CAPTURE(i);
            CHECK_FALSE(idle[i].closed_by_peer());
        }
        CHECK(hosts.wait_for_events("b", "peer_refused"));
        CHECK(any_event_with(hosts.events("b", "peer_refused"), "text", "(--max-pending-per-source 3)"));
        // Another host is not held up by them.
        check_fork_succeeded(hosts.run("c", {program_path("fork_or_report"), "b:7000"}));

        CHECK(wait_closed(idle, {0, 1, 2}, 60s));
        CHECK(std::chrono::steady_clock::now() - started >= 7s);  // by the timeout, not sooner
        // Their places are free again: a forks too.
        check_fork_succeeded(hosts.run("a", {program_path("fork_or_report"), "b:7000"}));
        check_nothing_left(hosts, {"a", "b", "c"}, {{"b", 2}});
    }

    TEST_CASE("connections beyond --max-pending-connections are closed at once and their places come back") {
        require_fork_environment();
        test_hosts hosts({"a", "b", "c"}, {.agent_args = {"b=--max-pending-connections 2"}});
        INFO(agent_logs(hosts, {"a", "b", "c"}));
        std::vector<idle_connection> idle;
        idle.emplace_back(hosts, "a", hosts.address("b"), 7000);
        idle.emplace_back(hosts, "c", hosts.address("b"), 7000);
        idle.emplace_back(hosts, "c", hosts.address("b"), 7000);
        CHECK(wait_closed(idle, {2}, 10s));
        CHECK_FALSE(idle[0].closed_by_peer());
        CHECK_FALSE(idle[1].closed_by_peer());
        // Left by their clients: the agent gives their places back on every way out.
        idle.clear();
        check_fork_succeeded(hosts.run("a", {program_path("fork_or_report"), "b:7000"}));
        check_nothing_left(hosts, {"a", "b", "c"}, {{"b", 1}});
    }

    TEST_CASE("out of descriptors the agent waits between attempts to accept and forks again once it has some") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--handshake-timeout 2"}});
        INFO(agent_logs(hosts, {"a", "b"}));
        int pid = hosts.agent_pid("b");
        // Room for two more descriptors: lowering the soft limit needs no privilege.
        rlimit old{};
        REQUIRE(::prlimit(pid, RLIMIT_NOFILE, nullptr, &old) == 0);
        rlimit low{fd_count(pid) + 2, old.rlim_max};
        REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &low, nullptr) == 0);
        struct restore_limit {
            int pid;
            rlimit old;
            ~restore_limit() { ::prlimit(pid, RLIMIT_NOFILE, &old, nullptr); }
        } restore{pid, old};

        std::vector<idle_connection> burst;
        for (int i = 0; i < 8; ++i) burst.emplace_back(hosts, "a", hosts.address("b"), 7000);
        // It took two; accept fails for the rest (EMFILE) while they wait.
        REQUIRE(hosts.wait_for_events("b", "accept_failed"));
        auto cpu_before = cpu_time(pid);
        auto wall_before = std::chrono::steady_clock::now();
        // Until the two it took time out (--handshake-timeout 2), it has no
        // descriptor to spare and connections waiting: a loop that retried at
        // once would use all of a CPU meanwhile.
        CHECK(wait_closed_count(burst, 2, 30s) >= 2);
        auto cpu = cpu_time(pid) - cpu_before;
        auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - wall_before);
        CAPTURE(cpu.count());
        CAPTURE(wall.count());
        CHECK(cpu < wall / 4 + 50ms);
        // One event (and log line) as an episode starts, not one per failure
        // (a second episode may have started as the two ended).
        CHECK(hosts.events("b", "accept_failed").size() <= 2);

        burst.clear();
        ::prlimit(pid, RLIMIT_NOFILE, &old, nullptr);
        check_fork_succeeded(hosts.run("a", {program_path("fork_or_report"), "b:7000"}));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("bad limits on the command line are refused") {
        require_fork_environment();
        for (auto args : {std::vector<std::string>{"--handshake-timeout", "0"},
                          std::vector<std::string>{"--idle-timeout", "x"},
                          std::vector<std::string>{"--max-image-size", "-1"},
                          std::vector<std::string>{"--max-restores", "1e3"},
                          std::vector<std::string>{"--max-pending-connections", "-1"},
                          std::vector<std::string>{"--max-pending-per-source", "100001"},
                          std::vector<std::string>{"--max-children", "100001"},
                          std::vector<std::string>{"--child-max-pids", "4194305"},
                          std::vector<std::string>{"--child-max-memory", "4G"}}) {
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
