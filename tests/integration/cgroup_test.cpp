// Each restored child runs in a cgroup of its own under its agent's, with
// the agent's limits on tasks and memory, from its first process to its
// last; the cgroup goes when the child ends, and the agent holds no more
// children at once than --max-children.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

constexpr const char* max_pids = "16";
constexpr const char* max_memory = "268435456";  // 256 MiB

// A cgroup_probe child held on host b until release(): its report, once "done".
class held_child {
public:
    held_child(const test_hosts& hosts, const temp_dir& dir)
        : report_((dir.path / "report").string()), release_path_((dir.path / "release").string()) {
        REQUIRE(::close(::open(report_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) == 0);
        REQUIRE(::mkfifo(release_path_.c_str(), 0600) == 0);
        // A writer from the start: the child's open never waits, and its read
        // ends once this closes.
        release_ = ::open(release_path_.c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(release_ >= 0);
        parent_ = std::make_unique<running_program>(
            hosts.start("a", {program_path("cgroup_probe"), "b:7000", dir.path.string()}));
    }
    ~held_child() { release(); }

    // The child's report, once it has forked as far as it could.
    std::string wait_for_report() {
        bool done = wait_for_file(report_, [](const std::string& text) { return text.ends_with("done\n"); }, 60s);
        REQUIRE(done);
        return read_file(report_);
    }
    run_result release() {
        if (release_ >= 0) ::close(release_);
        release_ = -1;
        if (!parent_) return {};
        auto r = parent_->finish();
        parent_.reset();
        return r;
    }

private:
    std::string report_, release_path_;
    int release_ = -1;
    std::unique_ptr<running_program> parent_;
};

std::string report_value(const std::string& report, const std::string& key) {
    return field(only_line(report, key + "="), key);
}

// The child's /proc/self/cgroup, from its report.
std::string child_cgroup_text(const std::string& report) {
    std::string text;
    for (auto& line : lines_starting_with(report, "cgroup ")) text += line.substr(7) + "\n";
    return text;
}

std::string first_line(const std::string& path) {
    auto text = read_file(path);
    return text.substr(0, text.find('\n'));
}

}  // namespace

TEST_SUITE("integration.cgroup") {
    TEST_CASE("a restored child runs in a cgroup of its own with the agent's limits and its own shared memory and forks no further") {
        require_fork_environment();
        test_hosts hosts({"a", "b"},
                         {.agent_args = {std::string("b=--child-max-pids ") + max_pids + " --child-max-memory " +
                                         max_memory}});
        temp_dir dir("cgroup");
        std::vector<std::string> dirs;
        {
            held_child child(hosts, dir);
            auto report = child.wait_for_report();
            INFO("report:\n" << report << agent_logs(hosts, {"a", "b"}));
            auto id = report_value(report, "id");
            auto own = child_cgroup_text(report);
            auto agents = read_file("/proc/" + std::to_string(hosts.agent_pid("b")) + "/cgroup");
            for (const char* controller : {"pids", "memory"}) {
                CAPTURE(controller);
                fs::path at = cgroup_directory(own, controller);
                fs::path agent = cgroup_directory(agents, controller);
                if (agent.filename() == "rfork-agent") agent = agent.parent_path();  // v2: the agent's leaf
                CHECK(at.filename() == "rfork-child-" + id);
                CHECK(at.parent_path() == agent);
                REQUIRE(fs::is_directory(at));
                dirs.push_back(at.string());
            }
            CHECK(first_line(dirs[0] + "/pids.max") == max_pids);
            auto memory_limit = fs::exists(dirs[1] + "/memory.max") ? "/memory.max" : "/memory.limit_in_bytes";
            CHECK(first_line(dirs[1] + memory_limit) == max_memory);
            // Its namespace's init and the child itself take two of the tasks.
            auto forks = std::stoi(report_value(report, "forks"));
            CHECK(field(only_line(report, "forks="), "errno") == "EAGAIN");
            CHECK(forks > 0);
            CHECK(forks <= std::stoi(max_pids) - 2);
            // Shared memory of its own: nothing it leaves there outlives it on the host.
            char agent_ipc[64] = {};
            auto agent_ns = "/proc/" + std::to_string(hosts.agent_pid("b")) + "/ns/ipc";
            REQUIRE(::readlink(agent_ns.c_str(), agent_ipc, sizeof agent_ipc - 1) > 0);
            CHECK(report_value(report, "ipc").starts_with("ipc:["));
            CHECK(report_value(report, "ipc") != agent_ipc);
            struct stat host_shm {};
            REQUIRE(::stat("/dev/shm", &host_shm) == 0);
            CHECK(report_value(report, "shm") != std::to_string(host_shm.st_dev));

            auto r = child.release();
            INFO("stdout: " << r.out << "\nstderr: " << r.err);
            CHECK(r.status == 0);
            CHECK(lines_with(r.out, "parent waited status=0").size() == 1);
        }
        // Gone before its parent learned that it ended.
        for (auto& at : dirs) CHECK_FALSE(fs::exists(at));
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a fork beyond --max-children is refused and the place comes back once the child has ended") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--max-children 1"}});
        temp_dir dir("cgroup");
        {
            held_child child(hosts, dir);
            child.wait_for_report();
            auto refused = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
            auto line = expect_failed_fork(refused, rfork::errc::limit_exceeded);
            CHECK(line.find("--max-children 1") != std::string::npos);
            CHECK(child.release().status == 0);
        }
        auto again = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << again.out << agent_logs(hosts, {"a", "b"}));
        CHECK(again.status == 0);
        CHECK(lines_with(again.out, "parent id=").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("without cgroups for children the agent refuses to start unless told --allow-unlimited-children") {
        require_fork_environment();
        temp_dir dir("no-cgroups");
        auto log = (dir.path / "agent.log").string();
        REQUIRE(::close(::open(log.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) == 0);
        // A machine without cgroups: an empty /sys/fs/cgroup, in a network of its own.
        std::string machine = "ip link set lo up && mount -t tmpfs none /sys/fs/cgroup && exec \"$@\" 2>>\"$0\"";
        std::vector<std::string> argv{"/usr/bin/unshare",
                                      "--mount",
                                      "--net",
                                      "--propagation",
                                      "private",
                                      "--",
                                      "sh",
                                      "-c",
                                      machine,
                                      log,
                                      program_path("rfork-agent"),
                                      "--listen",
                                      "127.0.0.1:7000",
                                      "--socket",
                                      (dir.path / "agent.sock").string(),
                                      "--work-dir",
                                      (dir.path / "work").string()};
        auto refused = running_program(argv).finish(30s);
        auto said = read_file(log);
        INFO("log: " << said);
        CHECK(refused.status == 1);
        CHECK(said.find("cannot give children cgroups of their own") != std::string::npos);
        CHECK(said.find("--allow-unlimited-children") != std::string::npos);

        argv.push_back("--allow-unlimited-children");
        running_program agent(argv);
        bool started = wait_for_file(log, [](const std::string& text) {
            return text.find("children run without cgroups") != std::string::npos;
        }, 30s);
        agent.kill_now();
        said = read_file(log);
        INFO("log: " << said);
        CHECK(started);
        CHECK(lines_with(said, "warning: children run without cgroups, unlimited in tasks and memory").size() == 1);
    }

    TEST_CASE("an image larger than a child's memory limit is refused before it is restored") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--child-max-memory 4096"}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto line = expect_failed_fork(r, rfork::errc::limit_exceeded);
        CHECK(line.find("--child-max-memory 4096") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});
    }
}
