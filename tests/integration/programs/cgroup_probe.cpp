// Forks to the endpoint; the child reports where it runs and how far it can
// fork, then holds its processes until it is released.
//
//   cgroup_probe HOST:PORT DIR
//
// The child appends to DIR/report, in one write: "id=ID", a "cgroup LINE"
// for each line of its /proc/self/cgroup, "ipc=ipc:[INODE]" (its IPC
// namespace), "shm=DEVICE" (of its /dev/shm), "forks=N errno=NAME" (processes it
// forked, each waiting on a pipe, until fork failed), then "done". Then it
// reads DIR/release (a FIFO, opened before that "done") to its end, lets its processes go, reaps them
// and exits 0. The parent prints "parent waited status=N".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace {

int child_main(const std::string& id, const std::string& dir) {
    std::string report = "id=" + id + "\n";
    std::ifstream cgroups("/proc/self/cgroup");
    for (std::string line; std::getline(cgroups, line);) report += "cgroup " + line + "\n";
    char ipc[64] = {};
    if (::readlink("/proc/self/ns/ipc", ipc, sizeof ipc - 1) < 0) return 1;
    struct stat shm {};
    if (::stat("/dev/shm", &shm) != 0) return 1;
    report += std::string("ipc=") + ipc + "\nshm=" + std::to_string(shm.st_dev) + "\n";

    int hold[2];
    if (::pipe(hold) != 0) return 1;
    int forks = 0, error = 0;
    for (;;) {
        pid_t pid = ::fork();
        if (pid < 0) {
            error = errno;
            break;
        }
        if (pid == 0) {
            ::close(hold[1]);
            char byte;
            while (::read(hold[0], &byte, 1) > 0) {
            }
            ::_exit(0);
        }
        if (++forks == 100000) break;  // no limit at all: stop somewhere
    }
    report += "forks=" + std::to_string(forks) + " errno=" + (error ? ::strerrorname_np(error) : "none") + "\ndone\n";
    // Opened before the report says "done": the test may let go at once.
    int release = ::open((dir + "/release").c_str(), O_RDONLY | O_CLOEXEC);
    int out = ::open((dir + "/report").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (out < 0 || ::write(out, report.data(), report.size()) != static_cast<ssize_t>(report.size())) return 1;
    ::close(out);

    char buffer[64];
    while (release >= 0 && ::read(release, buffer, sizeof buffer) > 0) {
    }
    ::close(hold[1]);
    while (::wait(nullptr) > 0 || errno == EINTR) {
    }
    return 0;
}

asio::awaitable<int> probe_main(asio::io_context& ctx, std::string endpoint, std::string dir) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) co_return child_main(r.child().id, dir);
    int status = co_await r.wait();
    std::printf("parent waited status=%d\n", status);
    std::fflush(stdout);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cgroup_probe HOST:PORT DIR\n");
        return 2;
    }
    return probe::run_main("cgroup_probe", [&](asio::io_context& ctx) { return probe_main(ctx, argv[1], argv[2]); });
}
