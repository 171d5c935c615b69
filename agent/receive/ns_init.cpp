#include "receive/ns_init.hpp"

#include "criu/criu.hpp"
#include "criu/criu_workspace.hpp"
#include "receive/file_placement.hpp"
#include "common/run_as.hpp"

#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace rfork::agent {

namespace {

void report(int fd, const std::string& line) {
    std::string text = line + "\n";
    [[maybe_unused]] auto ignored = ::write(fd, text.data(), text.size());
}

// CRIU's own loader and libraries, as this host has them: once the child's
// files are placed, the paths of this host's libc may hold the origin's, and
// CRIU (dynamically linked) must not run with those. Opened before the
// placement, and used through their descriptors: the loader runs CRIU with
// its library path on those directories.
struct host_loader {
    int loader = -1;
    std::string library_path;  // "/proc/self/fd/N:..."
    std::string program_path;  // the same for the programs CRIU runs (iptables, ...)
};

// The ELF interpreter (PT_INTERP) of the 64-bit program at `fd`; empty if
// it has none (a static program) or is not one this reads.
std::string elf_interpreter(int fd) {
    Elf64_Ehdr eh{};
    if (::pread(fd, &eh, sizeof eh, 0) != static_cast<ssize_t>(sizeof eh) ||
        std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 64)
        return {};
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph{};
        auto at = static_cast<off_t>(eh.e_phoff + i * sizeof ph);
        if (::pread(fd, &ph, sizeof ph, at) != static_cast<ssize_t>(sizeof ph)) return {};
        if (ph.p_type != PT_INTERP) continue;
        if (ph.p_filesz < 2 || ph.p_filesz > 4096) return {};
        std::string path(ph.p_filesz, '\0');
        if (::pread(fd, path.data(), path.size(), static_cast<off_t>(ph.p_offset)) != static_cast<ssize_t>(path.size()))
            return {};
        path.resize(std::strlen(path.c_str()));
        return path.starts_with('/') ? path : std::string{};
    }
    return {};
}

// Descriptors kept across exec, out of the way of those CRIU is given.
int keep_fd(int fd) {
    if (fd < 0) return -1;
    int moved = ::fcntl(fd, F_DUPFD, 200);
    ::close(fd);
    return moved;
}

// This host's loader and library directories for CRIU, through a detached
// copy of the root taken now: a file the placement binds over one of them
// later is not in that copy. nullopt if CRIU needs a loader this cannot find.
std::optional<host_loader> find_host_loader(int criu_fd) {
    // (The agent gave CRIU as an O_PATH descriptor: read through a new one.)
    int readable = ::open(("/proc/self/fd/" + std::to_string(criu_fd)).c_str(), O_RDONLY | O_CLOEXEC);
    if (readable < 0) return std::nullopt;
    auto interpreter = elf_interpreter(readable);
    bool is_elf = false;
    {
        unsigned char magic[SELFMAG];
        is_elf = ::pread(readable, magic, SELFMAG, 0) == SELFMAG && std::memcmp(magic, ELFMAG, SELFMAG) == 0;
    }
    ::close(readable);
    host_loader h;
    if (interpreter.empty()) return is_elf ? std::optional<host_loader>(h) : std::nullopt;  // static: none needed
    char real[PATH_MAX];
    if (!::realpath(interpreter.c_str(), real)) return std::nullopt;
    int root = keep_fd(::open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | AT_RECURSIVE));
    if (root < 0) return std::nullopt;
    auto in_root = "/proc/self/fd/" + std::to_string(root);
    h.loader = keep_fd(::open((in_root + real).c_str(), O_PATH | O_CLOEXEC));
    std::string dir = real;
    dir.erase(dir.rfind('/'));
    auto base = dir.substr(dir.rfind('/') + 1);  // the multiarch triplet, on Debian
    for (auto& d : {dir, "/lib/" + base, "/usr/lib/" + base, std::string("/usr/lib"), std::string("/lib")}) {
        struct stat st {};
        if (::stat((in_root + d).c_str(), &st) == 0 && S_ISDIR(st.st_mode))
            h.library_path += (h.library_path.empty() ? "" : ":") + in_root + d;
    }
    for (std::string d : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"})
        h.program_path += (h.program_path.empty() ? "" : ":") + in_root + d;
    if (h.loader < 0 || h.library_path.empty()) return std::nullopt;
    return h;
}

// The files the child uses that this host lacks, placed at their paths as
// the plan at `plan_fd` says, with this host's loader for CRIU found first
// (`loader`). Returns the status line of a failure, or empty.
std::string place_files(int plan_fd, std::optional<host_loader>& loader) {
    loader = find_host_loader(ns_init_criu_fd);
    if (!loader) return "files-failed cannot find this host's loader and libraries for CRIU";
    std::vector<unsigned char> bytes;
    unsigned char buffer[65536];
    for (ssize_t n; (n = ::read(plan_fd, buffer, sizeof buffer)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || bytes.size() > (64u << 20)) return "files-failed cannot read the plan";
        bytes.insert(bytes.end(), buffer, buffer + n);
    }
    ::close(plan_fd);
    auto plan = decode_plan(bytes);
    if (!plan) return "files-failed the plan does not decode";
    if (auto why = carry_out(*plan); !why.empty()) return "files-failed " + why;
    return {};
}

// A /proc of this pid namespace, which CRIU needs, and shared memory of the
// child's own (with its IPC namespace): what it leaves there goes with the
// namespace, never outliving its cgroup on the host's /dev/shm or in the
// host's SysV segments. (A host without /dev/shm has none to leave things in.)
// Returns the status line of a failure, or empty.
std::string mount_proc_and_shm() {
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return std::string("failed cannot mount /proc: ") + std::strerror(errno);
    if (::mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0 && errno != ENOENT)
        return std::string("failed cannot mount /dev/shm: ") + std::strerror(errno);
    return {};
}

// In the forked CRIU process: runs CRIU through ns_init_criu_fd, with this
// host's loader and libraries when the child's files were placed.
[[noreturn]] void exec_criu(char** criu_argv, const std::optional<host_loader>& loader) {
    if (loader && loader->loader >= 0) {
        // This host's loader runs CRIU (through its descriptor) with this host's libraries.
        auto library_path = loader->library_path;
        std::vector<char*> args{criu_argv[0], const_cast<char*>("--library-path"), library_path.data(),
                                const_cast<char*>("--argv0"), criu_argv[0]};
        std::string program = "/proc/self/fd/" + std::to_string(ns_init_criu_fd);
        args.push_back(program.data());
        for (char** a = criu_argv + 1; *a; ++a) args.push_back(*a);
        args.push_back(nullptr);
        // The programs CRIU runs, and their libraries, are this host's too.
        std::string path = "PATH=" + loader->program_path, libraries = "LD_LIBRARY_PATH=" + loader->library_path;
        std::vector<char*> env;
        for (char** e = environ; *e; ++e)
            if (std::strncmp(*e, "PATH=", 5) != 0 && std::strncmp(*e, "LD_", 3) != 0) env.push_back(*e);
        env.push_back(path.data());
        env.push_back(libraries.data());
        env.push_back(nullptr);
        ::execveat(loader->loader, "", args.data(), env.data(), AT_EMPTY_PATH);
        ::_exit(127);
    }
    ::fcntl(ns_init_criu_fd, F_SETFD, FD_CLOEXEC);
    ::execveat(ns_init_criu_fd, "", criu_argv, environ, AT_EMPTY_PATH);
    ::_exit(127);
}

// Runs CRIU's restore; returns the restored child's pid (in this namespace)
// or the status line of a failure.
std::variant<long, std::string> run_criu_restore(char** criu_argv, const std::optional<run_as>& as,
                                                 const std::optional<host_loader>& loader, int status_fd) {
    pid_t criu = ::fork();
    if (criu > 0 && as && drop_capabilities() != 0) {
        ::kill(criu, SIGKILL);
        return std::string("failed cannot drop capabilities");
    }
    if (criu == 0) {
        ::close(status_fd);
        exec_criu(criu_argv, loader);
    }
    // The agent may go away; a report then must not kill the namespace.
    ::signal(SIGPIPE, SIG_IGN);
    int status = 0;
    while (criu > 0 && ::waitpid(criu, &status, 0) < 0 && errno == EINTR) {
    }
    if (criu < 0) return std::string("failed cannot fork: ") + std::strerror(errno);
    if (status != 0) return "criu-failed " + std::to_string(status);
    auto pid_text = read_criu_file(criu_work_fd, restored_pid_file, 64);
    long child = pid_text ? std::atol(pid_text->c_str()) : 0;
    if (child <= 1) return std::string("failed CRIU wrote no pid file");
    return child;
}

// Reaps every process of the namespace (orphans come to pid 1) until the
// last one ends; returns the wait status of `child`.
int reap_all(long child) {
    int child_status = 0;
    for (;;) {
        int s = 0;
        pid_t reaped = ::wait(&s);
        if (reaped == child) child_status = s;
        if (reaped < 0 && errno == ECHILD) break;
    }
    return child_status;
}

}  // namespace

int run_ns_init(int argc, char** argv) {
    // ns-init STATUS_FD root|UID:GID:GROUPS:CAPS PLAN_FD|- -- CRIU...
    std::optional<run_as> as;
    if (argc >= 7 && std::strcmp(argv[3], "root") != 0) as = from_argument(argv[3]);
    if (argc < 7 || std::strcmp(argv[5], "--") != 0 || getpid() != 1 || (std::strcmp(argv[3], "root") != 0 && !as)) {
        std::fprintf(stderr, "rfork-agent ns-init is started by the agent only\n");
        return 2;
    }
    int status_fd = std::atoi(argv[2]);
    int plan_fd = std::strcmp(argv[4], "-") == 0 ? -1 : std::atoi(argv[4]);
    char** criu_argv = argv + 6;
    auto fail = [status_fd](const std::string& line) {
        report(status_fd, line);
        return 1;
    };

    ::setsid();  // out of the agent's session: its terminal's signals are not the child's
    // A mount namespace of our own, whose mounts the host does not see.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail(std::string("failed cannot make its mounts private: ") + std::strerror(errno));
    // The child's files, before anything of the child's runs (and before its
    // /proc, which the plan may move: the namespace's root may be new).
    std::optional<host_loader> loader;
    if (plan_fd >= 0)
        if (auto failed = place_files(plan_fd, loader); !failed.empty()) return fail(failed);
    if (auto failed = mount_proc_and_shm(); !failed.empty()) return fail(failed);

    // From here on the namespace holds only the user's processes: this init
    // takes the user's identity (with CRIU's few capabilities, for CRIU to
    // inherit), and drops those once CRIU runs.
    if (as) {
        if (int e = become(*as))
            return fail(std::string("failed cannot take the identity of uid ") + std::to_string(as->uid) + ": " +
                        std::strerror(e));
    }
    auto restored = run_criu_restore(criu_argv, as, loader, status_fd);
    if (auto* failed = std::get_if<std::string>(&restored)) return fail(*failed);
    auto child = std::get<long>(restored);
    // The restored child holds its own copies of the inherited fds now.
    ::close_range(static_cast<unsigned>(status_fd) + 1, ~0u, 0);  // the status fd is the lowest we were given
    report(status_fd, "restored " + std::to_string(child));
    report(status_fd, "exited " + std::to_string(reap_all(child)));
    return 0;
}

}  // namespace rfork::agent
