#include "criu/criu.hpp"

#include "criu/criu_workspace.hpp"

#include "common/log.hpp"
#include "common/process.hpp"

#include <rfork/detail/process_info.hpp>

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <fstream>
#include <sstream>

namespace rfork::agent {

namespace fs = std::filesystem;

namespace {

// An executable ELF file: CRIU is executed through an fd (execveat), which
// cannot run a #! script (its interpreter would find no path to open).
bool is_executable(const std::string& path) {
    if (path.empty() || ::access(path.c_str(), X_OK) != 0) return false;
    char magic[4] = {};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool elf = fd >= 0 && ::read(fd, magic, sizeof magic) == 4 && std::memcmp(magic, "\x7f" "ELF", 4) == 0;
    if (fd >= 0) ::close(fd);
    return elf;
}

std::string search_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
    for (std::string dir; std::getline(dirs, dir, ':');)
        if (auto candidate = dir + "/" + name; is_executable(candidate)) return candidate;
    return {};
}

bool is_tty_device(const struct stat& st) {
    if (!S_ISCHR(st.st_mode)) return false;
    auto major_number = major(st.st_rdev);
    // 136-143: Unix98 pseudo-terminals, 4: virtual consoles and serial, 5: /dev/tty, /dev/console, ptmx.
    return (major_number >= 136 && major_number <= 143) || major_number == 4 ||
           (major_number == 5 && minor(st.st_rdev) <= 1);
}

// The mnt_id of an open file, from /proc/PID/fdinfo/FD.
long mount_id(int pid, int fd) { return detail::proc_field(fmt::format("/proc/{}/fdinfo/{}", pid, fd), "mnt_id"); }

// Whether the process's own mount namespace has that mount.
bool has_mount(int pid, long mount) {
    std::ifstream in(fmt::format("/proc/{}/mountinfo", pid));
    for (long id; in >> id;) {
        if (id == mount) return true;
        in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    return false;
}

}  // namespace

std::string find_criu(const std::string& configured, const std::string& self_exe) {
    if (!configured.empty()) return is_executable(configured) ? configured : std::string{};
    if (const char* env = std::getenv("RFORK_CRIU"); env && *env) return is_executable(env) ? env : std::string{};
    if (auto beside = fs::path(self_exe).parent_path() / RFORK_CRIU_FROM_AGENT; is_executable(beside))
        return fs::weakly_canonical(beside).string();
    return search_path("criu");
}

stdio_files inspect_stdio(int pid) {
    stdio_files result;
    for (int fd = 0; fd < 3; ++fd) {
        auto link = fmt::format("/proc/{}/fd/{}", pid, fd);
        std::error_code ec;
        auto target = fs::read_symlink(link, ec).string();
        struct stat st {};
        if (ec || ::stat(link.c_str(), &st) != 0) continue;  // closed: nothing to replace
        std::string& key = result.keys[static_cast<std::size_t>(fd)];
        if (target.starts_with("pipe:[")) {
            key = target;
        } else if (target.starts_with("socket:[")) {
            key = target;
            result.externals.push_back(fmt::format("unix[{}]", st.st_ino));
        } else if (is_tty_device(st)) {
            key = fmt::format("tty[{:x}:{:x}]", st.st_rdev, st.st_dev);
            result.externals.push_back(key);
        } else if (auto mount = mount_id(pid, fd); (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)) && mount >= 0) {
            if (has_mount(pid, mount) && target.starts_with('/') && !target.ends_with(" (deleted)")) {
                key = target.substr(1);  // CRIU names files by their path without the leading '/'
            } else {
                // Opened in another mount namespace (a program started by
                // nsenter): CRIU dumps it as external "file[MNT:INO]" and, on
                // restore, looks the inherited fd up by the name it keeps for it:
                // that id without its first character (criu/files-reg.c). That
                // lookup hands our fd over as is; the documented "file[..]" key
                // would reopen it and seek, which a pipe refuses.
                auto id = fmt::format("file[{:x}:{:x}]", mount, st.st_ino);
                result.externals.push_back(id);
                key = id.substr(1);
            }
        }
    }
    std::sort(result.externals.begin(), result.externals.end());
    result.externals.erase(std::unique(result.externals.begin(), result.externals.end()), result.externals.end());
    return result;
}

// Every CRIU runs with no configuration file and no plugins (its --libdir
// is its work directory, which holds none): where a child's files are
// placed, /etc/criu or /usr/lib/criu could be a peer's.
std::vector<std::string> dump_command(const std::string& criu, const dump_request& r) {
    // --shell-job: the caller is rarely a session leader.
    std::vector<std::string> argv{criu,
                                  "dump",
                                  "--no-default-config",
                                  "--libdir",
                                  criu_workspace::work_dir(),
                                  "--tree",
                                  std::to_string(r.pid),
                                  "--images-dir",
                                  criu_workspace::images_dir(),
                                  "--work-dir",
                                  criu_workspace::work_dir(),
                                  "--log-file",
                                  dump_log,
                                  "-v4",
                                  "--shell-job",
                                  "--external",
                                  fmt::format("unix[{}]", r.socket_inode)};
    if (r.leave_running) argv.push_back("--leave-running");
    if (r.unprivileged) argv.push_back("--unprivileged");
    // Its connections are dumped (and stay the parent's), to be restored
    // closed; nftables holds their packets for the instant of the dump.
    if (r.tcp_connections) argv.insert(argv.end(), {"--tcp-established", "--network-lock", "nftables"});
    for (auto& e : r.externals) argv.insert(argv.end(), {"--external", e});
    if (r.lazy_ps_socket >= 0)
        argv.insert(argv.end(), {"--lazy-pages", "--ps-socket", std::to_string(r.lazy_ps_socket), "--status-fd",
                                 std::to_string(r.lazy_status_fd)});
    return argv;
}

std::vector<std::string> restore_command(const std::string& criu,
                                         const std::vector<std::pair<int, std::string>>& inherit, bool lazy,
                                         bool unprivileged) {
    // --tcp-close: the parent's connections are the parent's; the child sees them closed.
    // --manage-cgroups=ignore: the child stays in the cgroup its namespace
    // init joined (its own, child_cgroup.hpp), never the cgroups its image
    // names: those are another machine's.
    std::vector<std::string> argv{criu,
                                  "restore",
                                  "--no-default-config",
                                  "--libdir",
                                  criu_workspace::work_dir(),
                                  "--images-dir",
                                  criu_workspace::images_dir(),
                                  "--work-dir",
                                  criu_workspace::work_dir(),
                                  "--log-file",
                                  restore_log,
                                  "-v4",
                                  "--shell-job",
                                  "--restore-detached",
                                  "--tcp-close",
                                  "--manage-cgroups=ignore",
                                  "--pidfile",
                                  restored_pid_file};
    if (lazy) argv.push_back("--lazy-pages");
    if (unprivileged) argv.push_back("--unprivileged");
    for (auto& [fd, key] : inherit) argv.insert(argv.end(), {"--inherit-fd", fmt::format("fd[{}]:{}", fd, key)});
    return argv;
}

std::vector<std::string> lazy_pages_command(const std::string& criu, int ps_socket, int status_fd) {
    std::vector<std::string> argv{criu,
                                  "lazy-pages",
                                  "--no-default-config",
                                  "--libdir",
                                  criu_workspace::work_dir(),
                                  "--page-server",
                                  "--ps-socket",
                                  std::to_string(ps_socket),
                                  "--status-fd",
                                  std::to_string(status_fd),
                                  "--images-dir",
                                  criu_workspace::images_dir(),
                                  "--work-dir",
                                  criu_workspace::work_dir(),
                                  "--log-file",
                                  lazy_pages_log,
                                  "-v4"};
    return argv;
}

std::string lazy_pages_problem() {
    unique_fd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
    if (!uffd) return fmt::format("no userfaultfd ({})", std::strerror(errno));
    // CRIU's lazy page server sizes its pipes so (page-pipe.h: 8 pages of
    // 40-byte pipe buffers), beyond fs.pipe-max-size without CAP_SYS_RESOURCE.
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "no pipe";
    unique_fd read_end(fds[0]), write_end(fds[1]);
    constexpr int criu_pipe_size = (8 * 4096 / 40) * 4096;
    if (::fcntl(read_end.get(), F_SETPIPE_SZ, criu_pipe_size) < 0)
        return fmt::format("pipes of {} bytes are refused ({}); raise fs.pipe-max-size to 4194304", criu_pipe_size,
                           std::strerror(errno));
    return {};
}

std::string criu_error_line(std::string_view log) {
    std::istringstream in{std::string(log)};
    std::string line, error, last;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        last = line;
        // CRIU always fails to raise its own RLIMIT_NOFILE under some setups; that is harmless.
        bool harmless = line.find("RLIMIT_NOFILE") != std::string::npos;
        if (line.find("Error (") != std::string::npos && error.empty() && !harmless) error = line;
    }
    // The first error is the cause; later ones are consequences.
    std::string chosen = error.empty() ? last : error;
    // Drop the timestamp and pid prefixes: "(00.012345)   6294: Error (...)".
    if (auto at = chosen.find("Error ("); at != std::string::npos) {
        chosen.erase(0, at);
    } else if (chosen.starts_with('(')) {
        if (auto close = chosen.find(") "); close != std::string::npos) chosen.erase(0, close + 2);
    }
    if (chosen.empty()) return "CRIU left no log";
    return chosen;
}

}  // namespace rfork::agent

namespace rfork::agent {

std::string log_criu_failure(std::string_view heading, int work_fd, const std::string& name) {
    log("{}; CRIU said:", heading);
    auto text = read_criu_file(work_fd, name);
    if (!text) return "CRIU left no log (" + name + ")";
    std::istringstream in(*text);
    int shown = 0;
    for (std::string line; std::getline(in, line) && shown < 20;) {
        if (line.find("Error (") == std::string::npos && line.find("Warn ") == std::string::npos) continue;
        log("  criu: {}", line);
        ++shown;
    }
    return criu_error_line(*text);
}

}  // namespace rfork::agent
