#include "common/children.hpp"

#include <rfork/detail/pidfd.hpp>

#include <fmt/core.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <string_view>

namespace rfork::agent {

namespace {

struct pidfd {
    explicit pidfd(int pid) : fd(detail::open_pidfd(pid)) {}
    ~pidfd() {
        if (fd >= 0) ::close(fd);
    }
    pidfd(const pidfd&) = delete;
    pidfd& operator=(const pidfd&) = delete;
    // 0, or an errno (ESRCH once its process is reaped, whatever has its pid now).
    int send(int signal) const {
        return ::syscall(SYS_pidfd_send_signal, fd, signal, nullptr, 0) == 0 ? 0 : errno;
    }
    int fd;
};

// A field of /proc/PID/status, such as "PPid" or "NSpid", without its name; "" if none.
std::string status_field(int pid, std::string_view name) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    for (std::string line; std::getline(in, line);)
        if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
            auto value = line.substr(name.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    return {};
}

}  // namespace

int restored_process_of(int init_pid) {
    // The init has one child of its own once CRIU is done: the restored process.
    std::ifstream in(fmt::format("/proc/{}/task/{}/children", init_pid, init_pid));
    int pid = -1;
    in >> pid;
    return in ? pid : -1;
}

int signal_restored_process(int init_pid, std::uint32_t pid_inside, int signal) {
    if (init_pid <= 0) return ESRCH;
    pidfd init(init_pid);
    if (init.fd < 0) return errno;
    int target = restored_process_of(init_pid);
    if (target <= 0) return ESRCH;
    pidfd process(target);
    if (process.fd < 0) return errno;
    // Read by pid, so about whatever has these pids now: the init is this
    // agent's child and pid 1 of its namespace, the target that init's child.
    // (While a hosted record lives, its init is not reaped: its pid is its own.)
    bool init_ok = status_field(init_pid, "PPid") == std::to_string(::getpid()) &&
                   status_field(init_pid, "NSpid").ends_with("\t1");
    bool target_ok = status_field(target, "PPid") == std::to_string(init_pid) &&
                     status_field(target, "NSpid").ends_with("\t" + std::to_string(pid_inside));
    // The reads were about the pidfds' processes if both still hold their
    // pids now (a pid goes to another process only once its own is reaped);
    // the signal then reaches the process the pidfd names, or none.
    if (!init_ok || !target_ok || init.send(0) != 0) return ESRCH;
    return process.send(signal);
}

}  // namespace rfork::agent
