#include "common/process.hpp"

#include "common/run_as.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/detail/pidfd.hpp>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/this_coro.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <system_error>

namespace rfork::agent {

pipe_pair make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

void unique_fd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

namespace {

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// Only async-signal-safe calls between fork and exec. The program is
// executed through `program`, an fd opened by the agent: the process that
// runs it may have taken a user's identity, or entered another mount
// namespace, where its path leads elsewhere or nowhere.
[[noreturn]] void exec_child(int program, char* const* argv, const std::vector<fd_mapping>& fds, int devnull,
                             const run_as* as, const std::vector<int>& cgroups) {
    // Into its cgroups first: nothing it starts ever runs outside them.
    for (int procs : cgroups)
        if (::write(procs, "0", 1) != 1) ::_exit(126);
    // Fds from `keep` up are free for the program's own: first copies of
    // every source above them (so no dup2 clobbers a later source), then the
    // program fd at `keep`. Any step that fails ends the child: it must never
    // run with fds it was not given, or run something else.
    std::size_t n = fds.size() < 16 ? fds.size() : 16;
    int keep = 3;
    for (std::size_t i = 0; i < n; ++i) keep = fds[i].target >= keep ? fds[i].target + 1 : keep;
    int moved[16];
    for (std::size_t i = 0; i < n; ++i)
        if ((moved[i] = ::fcntl(fds[i].source, F_DUPFD, keep + 1)) < 0) ::_exit(126);
    int program_high = ::fcntl(program, F_DUPFD, keep + 1);
    int null_high = ::fcntl(devnull, F_DUPFD, keep + 1);
    if (program_high < 0 || null_high < 0) ::_exit(126);
    for (int fd = 0; fd < 3; ++fd)
        if (::dup2(null_high, fd) < 0) ::_exit(126);
    for (std::size_t i = 0; i < n; ++i)
        if (::dup2(moved[i], fds[i].target) < 0) ::_exit(126);  // dup2 clears FD_CLOEXEC
    for (int fd = 3; fd < keep; ++fd) {
        bool mapped = false;
        for (std::size_t i = 0; i < n; ++i) mapped = mapped || fds[i].target == fd;
        if (!mapped) ::close(fd);
    }
    if (::dup3(program_high, keep, O_CLOEXEC) < 0) ::_exit(126);  // the program's own, closed as it runs
    ::close_range(static_cast<unsigned>(keep) + 1, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (as && become(*as) != 0) ::_exit(126);
    ::execveat(keep, "", argv, environ, AT_EMPTY_PATH);
    ::_exit(127);
}

struct exec_request {
    int program;
    char* const* argv;
    const std::vector<fd_mapping>* fds;
    int devnull;
    const run_as* as;
    const std::vector<int>* cgroups;
};

int exec_from_clone(void* arg) {
    auto* request = static_cast<exec_request*>(arg);
    exec_child(request->program, request->argv, *request->fds, request->devnull, request->as, *request->cgroups);
}

// The child's part of spawn(..., join): only async-signal-safe calls.
[[noreturn]] void exec_in_namespaces_of(int pidfd, int program, char* const* argv, const std::vector<fd_mapping>& fds,
                                        int devnull, const run_as* as) {
    // A pidfd names that very process: if it ended, nothing else is joined.
    if (::setns(pidfd, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC) != 0) ::_exit(125);
    pid_t inner = ::fork();  // a pid namespace takes only new processes
    if (inner < 0) ::_exit(125);
    if (inner == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // whoever kills the child kills the program
        // Its parent is outside its pid namespace: getppid() is 0 while that
        // parent lives, and the namespace init's pid once it has died.
        if (::getppid() != 0) ::_exit(125);
        exec_child(program, argv, fds, devnull, as, {});
    }
    int status = 0;
    while (::waitpid(inner, &status, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace

child_process spawn(const std::vector<std::string>& argv, const std::vector<fd_mapping>& fds, int namespaces,
                    const run_as* as, int join, const std::vector<int>& cgroups) {
    if (fds.size() > 16) throw std::invalid_argument("spawn: too many fds");
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    unique_fd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!devnull) throw_errno("open /dev/null");
    unique_fd program(::open(argv.at(0).c_str(), O_PATH | O_CLOEXEC));
    if (!program) throw std::system_error(errno, std::generic_category(), "open " + argv[0]);

    pid_t pid;
    if (namespaces == 0) {
        pid = ::fork();
        if (pid == 0 && join >= 0) exec_in_namespaces_of(join, program.get(), cargv.data(), fds, devnull.get(), as);
        if (pid == 0) exec_child(program.get(), cargv.data(), fds, devnull.get(), as, cgroups);
    } else {
        // clone(2) without CLONE_VM copies the address space, stack included.
        exec_request request{program.get(), cargv.data(), &fds, devnull.get(), as, &cgroups};
        std::vector<char> stack(64 * 1024);
        pid = ::clone(exec_from_clone, stack.data() + stack.size(), namespaces | SIGCHLD, &request);
    }
    if (pid < 0) throw_errno("fork");

    child_process child;
    child.pid = pid;
    child.pidfd.reset(detail::open_pidfd(pid));
    if (!child.pidfd) throw_errno("pidfd_open");
    return child;
}

asio::awaitable<void> wait_readable(unique_fd fd) {
    auto ex = co_await asio::this_coro::executor;
    int raw = fd.get();
    asio::posix::stream_descriptor watch(ex, fd.release());
    for (;;) {
        pollfd p{raw, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) co_return;
        auto [ec] = co_await watch.async_wait(asio::posix::stream_descriptor::wait_read, detail::as_tuple_awaitable);
        if (ec == asio::error::operation_aborted) co_return;
    }
}

asio::awaitable<int> wait_for_exit(child_process& child) {
    // A pidfd becomes readable when its process ends.
    unique_fd watched(::dup(child.pidfd.get()));
    co_await wait_readable(std::move(watched));
    int status = 0;
    while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    child.pidfd.reset();
    co_return status;
}

deadline::deadline(const asio::any_io_executor& ex, int pidfd, std::chrono::steady_clock::duration bound)
    : fired_(std::make_shared<bool>(false)), timer_(std::make_shared<asio::steady_timer>(ex, bound)) {
    auto target = std::make_shared<unique_fd>(::dup(pidfd));
    timer_->async_wait([fired = fired_, target](std::error_code ec) {
        if (ec || !*target) return;
        *fired = true;
        ::syscall(SYS_pidfd_send_signal, target->get(), SIGKILL, nullptr, 0);
    });
}

deadline::~deadline() { timer_->cancel(); }

asio::awaitable<std::optional<int>> wait_for_exit(child_process& child, std::chrono::steady_clock::duration bound) {
    deadline limit(co_await asio::this_coro::executor, child.pidfd.get(), bound);
    int status = co_await wait_for_exit(child);
    if (limit.fired()) co_return std::nullopt;
    co_return status;
}

std::chrono::steady_clock::duration criu_time_bound(std::chrono::seconds idle_timeout, std::uint64_t bytes) {
    return idle_timeout + std::chrono::seconds(bytes >> 26);
}

bool has_exited(int pidfd) {
    pollfd p{pidfd, POLLIN, 0};
    int n;
    do {
        n = ::poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n != 0;  // readable (ended), or not a pidfd we can watch: treated as gone
}

std::string describe_wait_status(int status) {
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
    return "exit code " + std::to_string(WEXITSTATUS(status));
}

int shell_status(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace rfork::agent
