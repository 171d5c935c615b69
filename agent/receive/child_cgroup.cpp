#include "receive/child_cgroup.hpp"

#include "common/log.hpp"

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>

namespace rfork::agent {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view child_prefix = "rfork-child-";
constexpr std::string_view agent_leaf = "rfork-agent";
constexpr std::string_view probe_prefix = "probe-";  // the cgroup an agent makes and removes at start

// 0 or an errno.
int write_file(const std::string& path, std::string_view text) {
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return errno;
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) return errno;
    return 0;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

bool has_word(const std::string& text, std::string_view word) {
    std::istringstream in(text);
    for (std::string w; in >> w;)
        if (w == word) return true;
    return false;
}

std::vector<std::string> split(const std::string& text, char by) {
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, by);) out.push_back(item);
    return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

struct cgroup_mount {
    std::string type;  // cgroup or cgroup2
    std::string root;  // the cgroup the mount shows at its mount point
    std::string point;
    std::vector<std::string> options;
};

std::vector<cgroup_mount> cgroup_mounts() {
    std::vector<cgroup_mount> out;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::vector<std::string> f;
        for (std::string w; fields >> w;) f.push_back(w);
        auto dash = std::find(f.begin(), f.end(), "-");
        if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
        if (dash[1] != "cgroup" && dash[1] != "cgroup2") continue;
        out.push_back({dash[1], unescape(f[3]), unescape(f[4]), split(dash[3], ',')});
    }
    return out;
}

// The directory of cgroup `path` under a mount of its hierarchy, or empty.
std::string directory_of(const cgroup_mount& m, const std::string& path) {
    if (m.root == "/") return m.point + (path == "/" ? "" : path);
    if (path == m.root) return m.point;
    if (path.starts_with(m.root + "/")) return m.point + path.substr(m.root.size());
    return {};
}

// The agent's cgroup, by controller ("" for v2), from /proc/self/cgroup.
std::optional<std::string> own_cgroup(std::string_view controller) {
    std::ifstream in("/proc/self/cgroup");
    for (std::string line; std::getline(in, line);) {
        auto first = line.find(':'), second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos) continue;
        auto controllers = line.substr(first + 1, second - first - 1);
        auto path = line.substr(second + 1);
        if (controller.empty() ? controllers.empty() && line.starts_with("0:")
                               : std::ranges::count(split(controllers, ','), std::string(controller)) > 0)
            return path;
    }
    return std::nullopt;
}

std::string find_directory(std::string_view controller) {
    auto path = own_cgroup(controller);
    if (!path) return {};
    for (auto& m : cgroup_mounts()) {
        bool fits = controller.empty() ? m.type == "cgroup2"
                                       : m.type == "cgroup" && std::ranges::count(m.options, std::string(controller)) > 0;
        if (!fits) continue;
        if (auto dir = directory_of(m, *path); !dir.empty() && fs::is_directory(dir)) return dir;
    }
    return {};
}

// Empty cgroups of children of an earlier agent; one still running keeps its own.
void remove_leftovers(const std::string& dir) {
    std::error_code ec;
    for (auto& entry : fs::directory_iterator(dir, ec)) {
        auto name = entry.path().filename().string();
        if (!name.starts_with(child_prefix) || !entry.is_directory()) continue;
        if (auto probe = std::string(child_prefix) + std::string(probe_prefix); name.starts_with(probe)) {
            auto pid = std::atoi(name.c_str() + probe.size());
            // Another agent starting now; one named for this agent's own pid is an old one's.
            if (pid > 0 && pid != ::getpid() && (::kill(pid, 0) == 0 || errno == EPERM)) continue;
        }
        if (::rmdir(entry.path().c_str()) == 0)
            log("removed {}, left empty by an earlier agent", entry.path().string());
        else
            log("note: {} is still in use (a child of an earlier agent?): {}", entry.path().string(),
                std::strerror(errno));
    }
}

// The pids in a cgroup.procs file other than this process.
std::vector<std::string> other_processes(const std::string& procs) {
    auto pids = split(read_text(procs), '\n');
    std::erase_if(pids, [](const std::string& pid) { return pid.empty() || pid == std::to_string(::getpid()); });
    return pids;
}

// What prepare_v2 changed, undone if the agent cannot go on with it.
struct v2_changes {
    std::string dir, leaf;  // the leaf the agent moved into from dir, if it did
    std::string enabled;    // the controllers it enabled in dir, e.g. "+pids +memory"

    void undo() {
        if (!enabled.empty()) {
            std::ranges::replace(enabled, '+', '-');
            if (int e = write_file(dir + "/cgroup.subtree_control", enabled))
                log("cannot disable {} again in {}: {}", enabled, dir, std::strerror(e));
        }
        if (!leaf.empty() && write_file(dir + "/cgroup.procs", std::to_string(::getpid())) == 0) ::rmdir(leaf.c_str());
        enabled.clear();
        leaf.clear();
    }
};

// v2: the agent out of the cgroup it gives children (no internal
// processes), and the controllers enabled for them. Returns why not, or
// empty; on failure the agent is back where it was and has made nothing.
std::string prepare_v2(std::string& dir, v2_changes& changes) {
    // Only the hierarchy's real root (it alone has no cgroup.type) may hold
    // processes beside children with controllers; a cgroup namespace's
    // root is not it.
    bool real_root = !fs::exists(dir + "/cgroup.type");
    if (fs::path(dir).filename() == agent_leaf) {
        dir = fs::path(dir).parent_path().string();  // an agent started again in its own leaf
    } else if (!real_root) {
        // With others left beside it, the controllers could not be enabled
        // (EBUSY): refused before the agent moves.
        if (auto others = other_processes(dir + "/cgroup.procs"); !others.empty())
            return fmt::format("other processes share the agent's cgroup {} (pid {}{}): give it one of its own, as "
                               "systemd does for the service (Delegate=)",
                               dir, others.front(), others.size() > 1 ? " and more" : "");
        auto leaf = dir + "/" + std::string(agent_leaf);
        if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST)
            return fmt::format("cannot make {}: {}", leaf, std::strerror(errno));
        if (int e = write_file(leaf + "/cgroup.procs", std::to_string(::getpid()))) {
            ::rmdir(leaf.c_str());
            return fmt::format("cannot move the agent into {}: {}", leaf, std::strerror(e));
        }
        changes.leaf = leaf;
    }
    changes.dir = dir;
    auto enabled = read_text(dir + "/cgroup.subtree_control");
    std::string missing;
    for (std::string controller : {"pids", "memory"})
        if (!has_word(enabled, controller)) missing += (missing.empty() ? "+" : " +") + controller;
    if (missing.empty()) return {};
    if (int e = write_file(dir + "/cgroup.subtree_control", missing)) {
        changes.undo();
        return fmt::format("cannot enable the pids and memory controllers in {}: {}{}", dir, std::strerror(e),
                           e == EBUSY ? " (other processes share the agent's cgroup: give it one of its own, "
                                        "as systemd does with Delegate=)"
                                      : "");
    }
    changes.enabled = missing;
    return {};
}

}  // namespace

std::string cgroup_parent::describe() const {
    if (v2) return fmt::format("cgroup v2, under {}", dirs.at(0));
    if (dirs.size() == 1) return fmt::format("cgroup v1, under {} (pids and memory together)", dirs.at(0));
    return fmt::format("cgroup v1, under {} and {}", dirs.at(0), dirs.at(1));
}

std::variant<cgroup_parent, std::string> find_cgroup_parent() {
    // v2 first: where it has the controllers, no v1 hierarchy can.
    if (auto dir = find_directory(""); !dir.empty()) {
        auto available = read_text(dir + "/cgroup.controllers");
        if (has_word(available, "pids") && has_word(available, "memory")) return cgroup_parent{true, {dir}};
    }
    auto pids = find_directory("pids"), memory = find_directory("memory");
    if (!pids.empty() && pids == memory) return cgroup_parent{false, {pids}};  // mounted together
    if (!pids.empty() && !memory.empty()) return cgroup_parent{false, {pids, memory}};
    return std::string(
        "no cgroup hierarchy with the pids and memory controllers is mounted where this agent's cgroup is "
        "(/proc/self/cgroup, under /sys/fs/cgroup)");
}

std::variant<cgroup_parent, std::string> prepare_cgroup_parent() {
    auto found = find_cgroup_parent();
    auto* parent = std::get_if<cgroup_parent>(&found);
    if (!parent) return found;
    v2_changes changes;
    if (parent->v2)
        if (auto why = prepare_v2(parent->dirs[0], changes); !why.empty()) return why;
    for (auto& dir : parent->dirs) remove_leftovers(dir);
    // A cgroup made and limited as a child's is, once: then they all can be.
    // (Named for this agent: another one starting beside it has its own.)
    std::string why;
    try {
        child_cgroup probe(*parent, fmt::format("{}{}", probe_prefix, ::getpid()), {1, 1 << 20});
        parent->swap_limited = probe.swap_limited();
        if (int e = probe.remove()) why = fmt::format("cannot remove {}: {}", probe.path(), std::strerror(e));
    } catch (const std::system_error& e) {
        why = e.what();
    }
    if (!why.empty()) {
        changes.undo();
        return why;
    }
    return found;
}

child_cgroup::child_cgroup(const cgroup_parent& parent, const std::string& id, const child_limits& limits)
    : v2_(parent.v2) {
    auto fail = [&](int e, const std::string& what) {
        remove();
        throw std::system_error(e, std::generic_category(), what);
    };
    for (auto& base : parent.dirs) {
        auto dir = fmt::format("{}/{}{}", base, child_prefix, id);
        if (::mkdir(dir.c_str(), 0755) != 0) fail(errno, "mkdir " + dir);
        dirs_.push_back(dir);
        // Readable by the child whatever the agent's umask (the unit's is
        // 0077): runtimes size themselves by their cgroup's limits.
        if (::chmod(dir.c_str(), 0755) != 0) fail(errno, "chmod " + dir);
    }
    // A new cgroup has no limit of its own: only those asked for are written.
    auto& pids_dir = dirs_.front();
    auto& memory_dir = dirs_.back();
    if (limits.max_pids)
        if (int e = write_file(pids_dir + "/pids.max", std::to_string(limits.max_pids)))
            fail(e, "write " + pids_dir + "/pids.max");
    if (limits.max_memory) {
        auto bytes = std::to_string(limits.max_memory);
        auto memory = memory_dir + (v2_ ? "/memory.max" : "/memory.limit_in_bytes");
        if (int e = write_file(memory, bytes)) fail(e, "write " + memory);
        // Swap too (where the kernel accounts it): the limit holds for memory swapped out.
        auto swap = memory_dir + (v2_ ? "/memory.swap.max" : "/memory.memsw.limit_in_bytes");
        if (int e = write_file(swap, v2_ ? "0" : bytes); e == ENOENT) swap_limited_ = false;
        else if (e) fail(e, "write " + swap);
    }
    for (auto& dir : dirs_) {
        unique_fd procs(::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
        if (!procs) fail(errno, "open " + dir + "/cgroup.procs");
        procs_.push_back(std::move(procs));
    }
}

child_cgroup::~child_cgroup() {
    // A child still running when the agent stops keeps its cgroup.
    if (int e = remove()) log("cgroup {} stays: {}", path(), std::strerror(e));
}

void child_cgroup::kill_all() {
    if (v2_ && !dirs_.empty()) write_file(dirs_.front() + "/cgroup.kill", "1");
}

std::vector<int> child_cgroup::procs_fds() const {
    std::vector<int> fds;
    for (auto& fd : procs_) fds.push_back(fd.get());
    return fds;
}

std::string child_cgroup::path() const { return dirs_.empty() ? std::string("(removed)") : dirs_.front(); }

int child_cgroup::remove() {
    procs_.clear();
    int first_error = 0;
    std::erase_if(dirs_, [&](const std::string& dir) {
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
        if (!first_error) first_error = errno;
        return false;
    });
    return first_error;
}

}  // namespace rfork::agent
