// Doctor's checks of this host, apart from CRIU.
#include "doctor/doctor_checks.hpp"

#include "receive/child_cgroup.hpp"
#include "criu/criu.hpp"
#include "common/host_facts.hpp"

#include <rfork/detail/pidfd.hpp>

#include <fmt/core.h>

#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace rfork::agent {

namespace fs = std::filesystem;

check_result check_root() {
    if (::geteuid() == 0) return passed("running as root");
    return failed("running as root", fmt::format("running as uid {}; the agent and CRIU need root", ::geteuid()),
                  "run it as root: sudo rfork-agent doctor ...");
}

check_result check_pidfd() {
    const char* what = "kernel: pidfd_open";
    int fd = detail::open_pidfd(::getpid());
    if (fd < 0)
        return failed(what, fmt::format("{}; the agent watches its processes through pidfds", std::strerror(errno)),
                      "a Linux kernel of 5.3 or later");
    ::close(fd);
    return passed(what);
}

check_result check_run_tmpfs() {
    if (run_is_tmpfs()) return passed("/run", "a tmpfs");
    return warned("/run",
                  "not a tmpfs: CRIU cannot cache its kernel checks there, so every fork pays for them on both "
                  "hosts (~15 ms each)",
                  "mount -t tmpfs -o mode=0755 tmpfs /run (systemd does so at boot)");
}

check_result check_child_cgroups(const options& opts) {
    const char* what = "cgroups for children";
    auto found = find_cgroup_parent();
    if (auto* parent = std::get_if<cgroup_parent>(&found))
        return passed(what, fmt::format("{}, as seen from doctor's own cgroup (the service's comes from "
                                        "Delegate=); each child at most {} tasks and {} bytes",
                                        parent->describe(), opts.limits.child_max_pids,
                                        opts.limits.child_max_memory));
    auto why = std::get<std::string>(found);
    auto fix = "mount the cgroup v2 hierarchy with the pids and memory controllers (systemd does; the service "
               "needs Delegate=pids memory), or accept children without limits: allow-unlimited-children";
    if (opts.allow_unlimited_children)
        return warned(what, why + "; children run without limits (allow-unlimited-children)", fix);
    return failed(what, why + "; the agent does not start without them", fix);
}

check_result check_directory(const std::string& what, const std::string& dir, const std::string& option) {
    std::string fix = fmt::format("mkdir -p {} as root, or choose another place: {}", dir, option);
    // The directory, or the nearest ancestor that exists, where it would be made.
    fs::path at = dir;
    std::error_code ec;
    while (!fs::exists(at, ec) && !ec && at.has_relative_path()) at = at.parent_path();
    if (ec) return failed(what, fmt::format("cannot look at {}: {}", at.string(), ec.message()), fix);
    if (!fs::is_directory(at, ec)) return failed(what, fmt::format("{} is not a directory", at.string()), fix);
    struct statvfs st {};
    if (::statvfs(at.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY))
        return failed(what, fmt::format("{} is on a read-only file system", at.string()), fix);
    if (::access(at.c_str(), W_OK | X_OK) != 0)
        return failed(what, fmt::format("cannot write in {}: {}", at.string(), std::strerror(errno)), fix);
    if (at == fs::path(dir)) return passed(what, dir + " exists");
    return passed(what, fmt::format("{} can be made in {}", dir, at.string()));
}

}  // namespace rfork::agent
