// Plain CRIU's fork, as lean as a user would run it by hand, for the `criu`
// row of scripts/bench: no wrapper process inside the timed span. Started
// inside the test host (its net and mount namespaces), it takes the clock
// itself, forks and execs `criu dump` directly, takes the clock, then starts
// `criu restore` as pid 1 of a fresh pid namespace, in a mount namespace of
// its own with its own /proc (what `unshare --pid --fork --mount-proc` does:
// CRIU then gives the copy its original pid with clone3 set_tid, and nothing
// on the host holds that pid). The restored copy (fork_bench idle) prints its
// own "child child_ns=" line; CRIU returns once that copy has ended.
//
//   criu_fork CRIU PID DIR
//       prints "criu start_ns= dumped_ns= restored_ns=" (wall clock, ns):
//       before the dump is started, once it has returned, once the restore
//       has returned. Logs at -v1 (errors only) into DIR/dump.log and
//       DIR/restore.log, so a failure can be read.
// Each CRIU run is bounded (TIME_BOUND seconds): one that hangs is killed and
// the run fails.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace {

constexpr int time_bound_s = 300;

long long wall_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

[[noreturn]] void throw_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

std::vector<char*> c_argv(std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return argv;
}

// The restore's side of the clone: only async-signal-safe calls. Mounts
// made here stay in this new mount namespace: / is made private first, so
// the new /proc does not propagate back to the host's.
int restore_in_namespaces(void* arg) {
    auto* argv = static_cast<char**>(arg);
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(125);
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, nullptr) != 0) ::_exit(125);
    ::execv(argv[0], argv);
    ::_exit(127);
}

pid_t start(std::vector<std::string> args, bool new_namespaces) {
    auto argv = c_argv(args);
    pid_t pid;
    if (!new_namespaces) {
        pid = ::fork();
        if (pid == 0) {
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
    } else {
        // clone(2) without CLONE_VM copies the address space, stack and argv included.
        std::vector<char> stack(64 * 1024);
        pid = ::clone(restore_in_namespaces, stack.data() + stack.size(), CLONE_NEWPID | CLONE_NEWNS | SIGCHLD,
                      argv.data());
    }
    if (pid < 0) throw_errno("cannot start " + args[0]);
    return pid;
}

// Waits for PID to end, at most time_bound_s; true if it exited with 0.
bool finished_well(pid_t pid, const char* what) {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) throw_errno("pidfd_open");
    pollfd p{pidfd, POLLIN, 0};
    int n;
    while ((n = ::poll(&p, 1, time_bound_s * 1000)) < 0 && errno == EINTR) {
    }
    if (n == 0) {
        ::kill(pid, SIGKILL);  // as pid 1 of its namespace, it takes the copy along
        std::fprintf(stderr, "criu_fork: %s did not end within %d s; killed\n", what, time_bound_s);
    }
    ::close(pidfd);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (n > 0 && !ok) std::fprintf(stderr, "criu_fork: %s failed (wait status %d)\n", what, status);
    return n > 0 && ok;
}

int criu_fork(const std::string& criu, const std::string& pid, const std::string& dir) {
    // As in scripts/bench before: --shell-job, the program is not its session's
    // leader; --network-lock skip, it has no TCP connection, and CRIU would
    // otherwise lock the host's network with iptables, which is not installed.
    std::vector<std::string> dump{criu, "dump", "--tree", pid, "--images-dir", dir, "--leave-running", "--shell-job",
                                  "--network-lock", "skip", "--log-file", "dump.log", "-v1"};
    std::vector<std::string> restore{criu, "restore", "--images-dir", dir, "--shell-job", "--log-file", "restore.log",
                                     "-v1"};
    long long start_ns = wall_ns();
    if (!finished_well(start(dump, false), "criu dump")) return 1;
    long long dumped_ns = wall_ns();
    if (!finished_well(start(restore, true), "criu restore")) return 1;
    long long restored_ns = wall_ns();
    std::printf("criu start_ns=%lld dumped_ns=%lld restored_ns=%lld\n", start_ns, dumped_ns, restored_ns);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: criu_fork CRIU PID DIR\n");
        return 2;
    }
    try {
        return criu_fork(argv[1], argv[2], argv[3]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "criu_fork: %s\n", e.what());
        return 1;
    }
}
