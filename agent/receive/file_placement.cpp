#include "receive/file_placement.hpp"

#include "common/process.hpp"

#include <rfork/detail/wire.hpp>

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <set>

namespace rfork::agent {

using protocol::file_kind;

// ---- the plan, as the agent hands it to the namespace init ----------------

std::vector<unsigned char> encode_plan(const placement_plan& plan) {
    std::vector<unsigned char> out;
    detail::wire_writer w(out);
    w.str(plan.stage);
    w.u32(static_cast<std::uint32_t>(plan.steps.size()));
    for (auto& s : plan.steps) {
        w.u8(static_cast<std::uint8_t>(s.what)), w.str(s.path), w.str(s.source);
        w.u32(s.mode), w.u32(s.uid), w.u32(s.gid), w.u64(static_cast<std::uint64_t>(s.mtime_ns));
    }
    return out;
}

std::optional<placement_plan> decode_plan(std::span<const unsigned char> bytes) {
    detail::wire_reader r(bytes);
    placement_plan plan;
    plan.stage = r.str(4095);
    auto n = r.u32();
    if (n > protocol::file_manifest::max_files) return std::nullopt;
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
        placement s;
        auto what = r.u8();
        s.what = static_cast<placement::action>(what);
        s.path = r.str(4095), s.source = r.str(4095);
        s.mode = r.u32(), s.uid = r.u32(), s.gid = r.u32();
        s.mtime_ns = static_cast<std::int64_t>(r.u64());
        if (what < 1 || what > 3 || !protocol::is_canonical_path(s.path)) return std::nullopt;
        plan.steps.push_back(std::move(s));
    }
    if (!r.done()) return std::nullopt;
    return plan;
}

// ---- the receiving agent's decision ---------------------------------------

namespace {

const char* kind_name(std::optional<file_kind> kind) {
    if (!kind) return "something else";
    switch (*kind) {
    case file_kind::regular: return "a regular file";
    case file_kind::directory: return "a directory";
    case file_kind::char_device: return "a character device";
    case file_kind::block_device: return "a block device";
    case file_kind::fifo: return "a named pipe";
    case file_kind::socket: return "a socket";
    }
    return "a file";
}

std::optional<file_kind> kind_of(mode_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG: return file_kind::regular;
    case S_IFDIR: return file_kind::directory;
    case S_IFCHR: return file_kind::char_device;
    case S_IFBLK: return file_kind::block_device;
    case S_IFIFO: return file_kind::fifo;
    case S_IFSOCK: return file_kind::socket;
    }
    return std::nullopt;
}

// Nothing is placed where the kernel's own file systems are: the child's
// /proc is mounted afresh over whatever was there, /sys and /dev are the host's.
bool in_kernel_tree(const std::string& path) {
    for (std::string_view top : {"/proc", "/sys", "/dev"})
        if (path == top || (path.starts_with(top) && path[top.size()] == '/')) return true;
    return false;
}

// The host's regular file at `path`, open for reading, and its stat; -1 if
// it is not one. Only a regular file is ever opened for reading: a path a
// local user swaps for a device meanwhile is looked at, never opened.
int open_regular(const std::string& path, struct stat& opened) {
    int at = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (at < 0) return -1;
    int fd = -1;
    if (::fstat(at, &opened) == 0 && S_ISREG(opened.st_mode))
        fd = ::open(("/proc/self/fd/" + std::to_string(at)).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    ::close(at);
    return fd;
}

// Whether the host's regular file at `path` is the one described.
bool same_file(const std::string& path, const struct stat& st, const protocol::file_description& file,
               file_identity_cache& host_files) {
    if (static_cast<std::uint64_t>(st.st_size) != file.size || (st.st_mode & 07777) != file.mode) return false;
    struct stat opened {};
    int fd = open_regular(path, opened);
    if (fd < 0) return false;
    auto id = host_files.identify(fd, opened);
    ::close(fd);
    if (!id) return false;
    // CRIU itself takes a build-id and size for the same file.
    if (!file.build_id.empty() && !id->build_id.empty()) return id->build_id == file.build_id;
    return id->sha256 == file.sha256;
}

// The same, for a file too large to hash: its size, mode and ELF build-id.
bool same_build_id(const std::string& path, const struct stat& st, const protocol::file_description& file) {
    if (file.build_id.empty() || static_cast<std::uint64_t>(st.st_size) != file.size ||
        (st.st_mode & 07777) != file.mode)
        return false;
    struct stat opened {};
    int fd = open_regular(path, opened);
    if (fd < 0) return false;
    bool same = elf_build_id(fd, static_cast<std::uint64_t>(opened.st_size)) == file.build_id;
    ::close(fd);
    return same;
}

}  // namespace

cache_key key_of(const protocol::file_description& file) {
    return cache_key{file.sha256, file.mode & 0777u, file.uid, file.gid};
}

file_decision decide_files(const protocol::file_manifest& manifest, file_cache& cache,
                           file_identity_cache& host_files, const file_limits& limits) {
    file_decision d;
    std::set<cache_key> asked;
    for (std::uint32_t i = 0; i < manifest.files.size(); ++i) {
        auto& file = manifest.files[i];
        auto refuse = [&](std::string why) {
            d.refusal = fmt::format("{} cannot be given to the child here: {}", file.path, why);
            return d;
        };
        struct stat st {};
        bool exists = ::stat(file.path.c_str(), &st) == 0;
        if (!exists && errno != ENOENT && errno != ENOTDIR)
            return refuse(fmt::format("cannot look at it here: {}", std::strerror(errno)));
        auto here = exists ? kind_of(st.st_mode) : std::nullopt;
        // The kernel's own files are this host's, whatever they hold.
        if (in_kernel_tree(file.path) && here == file.kind && file.kind == file_kind::regular) {
            ++d.host_own;
            continue;
        }
        switch (file.kind) {
        case file_kind::directory:
            if (!exists) {
                if (in_kernel_tree(file.path)) return refuse("nothing is made under /proc, /sys or /dev");
                d.missing_dirs.push_back(i);
            } else if (here != file_kind::directory) {
                return refuse(fmt::format("it is a directory at its origin and {} here", kind_name(here)));
            } else {
                ++d.host_own;
            }
            continue;
        case file_kind::char_device:
        case file_kind::block_device:
        case file_kind::fifo:
        case file_kind::socket:
            // They cannot travel; the host's own serves if it is of the same kind (and device).
            if (!exists)
                return refuse(fmt::format("it is {} at its origin, which cannot travel, and this host has none "
                                          "there", kind_name(file.kind)));
            if (here != file.kind || ((here == file_kind::char_device || here == file_kind::block_device) &&
                                      static_cast<std::uint64_t>(st.st_rdev) != file.rdev))
                return refuse(fmt::format("it is {} at its origin, which cannot travel, and another here",
                                          kind_name(file.kind)));
            ++d.host_own;
            continue;
        case file_kind::regular: break;
        }
        // No larger file travels, nor is one of this host's read whole to
        // compare with it: only its build-id, as CRIU itself does.
        if (file.size > limits.max_file_size) {
            if (exists && here == file_kind::regular && same_build_id(file.path, st, file)) {
                ++d.host_own;
                continue;
            }
            return refuse(fmt::format("it is {} bytes, more than this agent takes (--max-file-size {})", file.size,
                                      limits.max_file_size));
        }
        if (exists && here == file_kind::regular && same_file(file.path, st, file, host_files)) {
            ++d.host_own;
            continue;
        }
        if (exists && here != file_kind::regular)
            return refuse(fmt::format("it is a regular file at its origin and {} here", kind_name(here)));
        if (in_kernel_tree(file.path)) return refuse("nothing is placed under /proc, /sys or /dev");
        if (file.mode & (S_ISUID | S_ISGID))
            return refuse("a set-user-ID or set-group-ID file does not travel");
        auto key = key_of(file);
        if (asked.count(key) || cache.has(key)) {
            d.cached.push_back(i);  // (asked: arrives once, for both)
            continue;
        }
        d.wanted.push_back(i);
        d.wanted_bytes += file.size;
        asked.insert(key);
    }
    if (d.wanted_bytes > cache.capacity())
        d.refusal = fmt::format("its files are {} bytes, more than this agent's file cache holds (--file-cache-size "
                                "{})", d.wanted_bytes, cache.capacity());
    return d;
}

placement_plan plan_placements(const protocol::file_manifest& manifest, const file_decision& decision,
                               const file_cache& cache, std::string stage) {
    placement_plan plan{{}, std::move(stage)};
    auto file_step = [&](std::uint32_t i) {
        auto& f = manifest.files[i];
        plan.steps.push_back({f.writable ? placement::action::copy_file : placement::action::bind_file, f.path,
                              cache.path_of(key_of(f)), f.mode, f.uid, f.gid, f.mtime_ns});
    };
    for (auto i : decision.wanted) file_step(i);
    for (auto i : decision.cached) file_step(i);
    for (auto i : decision.missing_dirs) {
        auto& f = manifest.files[i];
        plan.steps.push_back({placement::action::make_dir, f.path, {}, f.mode, f.uid, f.gid, 0});
    }
    // Parents before what they hold.
    std::sort(plan.steps.begin(), plan.steps.end(), [](auto& a, auto& b) { return a.path < b.path; });
    return plan;
}

// ---- the namespace init's part --------------------------------------------

namespace {


std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// `path` as far as it exists here, links followed (as CRIU's open will
// follow them), and the components after that which do not exist.
struct resolved {
    std::string existing;
    std::deque<std::string> missing;
    std::optional<uid_t> link_owner;  // a user (not root) whose link the way went through
};

// The names of `p`'s components, put before or after those in `out`.
void split_into(std::string_view p, std::deque<std::string>& out, bool front) {
    std::vector<std::string> parts;
    for (std::size_t start = 0; start <= p.size();) {
        auto end = p.find('/', start);
        if (end == std::string_view::npos) end = p.size();
        if (end > start) parts.emplace_back(p.substr(start, end - start));
        start = end + 1;
    }
    if (front) out.insert(out.begin(), parts.begin(), parts.end());
    else out.insert(out.end(), parts.begin(), parts.end());
}

// Over 60 lines: one walk, a component at a time as the kernel resolves a
// path, whose steps share its state (where it is, what is left, whose links).
std::optional<resolved> resolve(const std::string& path, std::string& error) {
    std::deque<std::string> left;
    split_into(path, left, false);
    std::string at = "/";
    std::optional<uid_t> link_owner;
    auto join = [](const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; };
    for (int links = 0; !left.empty();) {
        auto name = left.front();
        if (name == ".") {
            left.pop_front();
            continue;
        }
        if (name == "..") {
            left.pop_front();
            auto slash = at.rfind('/');
            at = slash == 0 ? "/" : at.substr(0, slash);
            continue;
        }
        auto next = join(at, name);
        struct stat st {};
        if (::lstat(next.c_str(), &st) != 0) {
            // What is missing is made as named: a way back up (a link's "..")
            // through a directory that does not exist leads nowhere.
            if (errno == ENOENT && std::find(left.begin(), left.end(), "..") != left.end()) {
                error = path + " leads through " + next + ", which this host lacks, and back up";
                return std::nullopt;
            }
            if (errno == ENOENT) {
                std::erase(left, ".");
                return resolved{at, left, link_owner};
            }
            error = errno_text("cannot look at " + next);
            return std::nullopt;
        }
        left.pop_front();
        if (S_ISLNK(st.st_mode)) {
            if (++links > 40) {
                error = next + ": too many levels of symbolic links";
                return std::nullopt;
            }
            char target[4096];
            auto n = ::readlink(next.c_str(), target, sizeof target - 1);
            if (n <= 0) {
                error = errno_text("cannot read the link " + next);
                return std::nullopt;
            }
            std::string_view t(target, static_cast<std::size_t>(n));
            if (t.starts_with('/')) at = "/";
            split_into(t, left, true);
            if (st.st_uid != 0) {
                if (link_owner && *link_owner != st.st_uid) {
                    error = path + " leads through links of two users";
                    return std::nullopt;
                }
                link_owner = st.st_uid;
            }
            continue;
        }
        if (!S_ISDIR(st.st_mode) && !left.empty()) {
            error = next + " is not a directory here";
            return std::nullopt;
        }
        at = next;
    }
    return resolved{at, {}, link_owner};
}

bool copy_bytes(int from, int to) {
    for (;;) {
        auto n = ::copy_file_range(from, nullptr, to, nullptr, 1 << 30, 0);
        if (n == 0) return true;
        if (n < 0) break;
    }
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS) return false;
    char buffer[1 << 16];
    for (;;) {
        auto n = ::read(from, buffer, sizeof buffer);
        if (n == 0) return true;
        if (n < 0) return false;
        for (ssize_t done = 0; done < n;) {
            auto w = ::write(to, buffer + done, static_cast<std::size_t>(n - done));
            if (w < 0) return false;
            done += w;
        }
    }
}

// What the loader and CRIU read by path when they start, in the child's
// namespace: nothing is placed there, whatever the peer's file.
bool runs_criu(const std::string& path) {
    for (std::string_view reserved : {"/etc/ld.so.preload", "/etc/ld.so.cache", "/etc/ld.so.conf",
                                      "/etc/ld.so.conf.d", "/etc/criu", "/usr/lib/criu", "/usr/local/lib/criu",
                                      "/run/criu.kdat"})
        if (path == reserved || (path.starts_with(reserved) && path[reserved.size()] == '/')) return true;
    return false;
}

// Whether an open file lives on one of the kernel's own file systems,
// wherever they are mounted.
bool on_kernel_fs(int fd) {
    struct statfs f {};
    if (::fstatfs(fd, &f) != 0) return true;
    switch (static_cast<unsigned long>(f.f_type)) {
    case PROC_SUPER_MAGIC:
    case SYSFS_MAGIC:
    case DEVPTS_SUPER_MAGIC:
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
    case SECURITYFS_MAGIC:
    case DEBUGFS_MAGIC:
    case TRACEFS_MAGIC:
    case BPF_FS_MAGIC: return true;
    }
    return false;
}

// One mount the plan makes in the child's namespace: over a file of the
// host (a bind of the parent's version), or over a directory of the host
// (a tmpfs that shows what it holds besides the steps' files).
struct unit {
    std::string where;  // its canonical path, as resolved on the host
    bool directory = false;
    std::size_t file_step = 0;  // over a file: its step
    std::vector<std::pair<std::size_t, std::deque<std::string>>> steps;  // over a directory: what is missing under it
    std::size_t depth() const { return where == "/" ? 0 : static_cast<std::size_t>(std::count(where.begin(), where.end(), '/')); }
};

// Everything that writes happens through descriptors: of the stage (root's,
// in the agent's job directory) and of what is made on it. The host's paths
// are walked only to look (resolve) and once to open each mount's target,
// so a local user who swaps a directory for a link meanwhile can at most
// move where a mount lands in the child's own namespace, never write the host.
struct placer {
    const placement_plan& plan;
    const std::vector<unique_fd>& sources;
    std::set<std::pair<dev_t, ino_t>> made;  // directories made here
    std::string error;

    bool fail(std::string why) {
        error = std::move(why);
        return false;
    }

    // A fresh tmpfs on the stage, and a descriptor of it.
    unique_fd mount_stage(const std::string& what) {
        if (::mount("rfork-files", plan.stage.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
            fail(errno_text("cannot mount a tmpfs for " + what));
            return unique_fd{};
        }
        unique_fd stage(::open(plan.stage.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!stage) fail(errno_text("cannot open the tmpfs for " + what));
        return stage;
    }

    // The stage shows all that the directory `from` holds: a bind of each
    // entry (with what is mounted under it), a copy of each link.
    bool fill(int stage, int from, const std::string& dir) {
        struct stat st {};
        if (::fstat(from, &st) != 0 || ::fchmod(stage, st.st_mode & 07777) != 0 ||
            ::fchown(stage, st.st_uid, st.st_gid) != 0)
            return fail(errno_text("cannot give the tmpfs for " + dir + " its mode"));
        int listing = ::openat(from, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR* d = listing >= 0 ? ::fdopendir(listing) : nullptr;
        if (!d) {
            if (listing >= 0) ::close(listing);
            return fail(errno_text("cannot list " + dir));
        }
        std::vector<std::string> names;
        while (auto* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name != "." && name != "..") names.push_back(name);
        }
        ::closedir(d);
        if (names.size() > 100000) return fail(dir + " holds too many entries to show beside the child's files");
        for (auto& name : names) {
            struct stat e {};
            if (::fstatat(from, name.c_str(), &e, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) != 0) {
                if (errno == ENOENT) continue;  // gone meanwhile: not shown
                return fail(errno_text("cannot look at " + dir + "/" + name));
            }
            if (S_ISLNK(e.st_mode)) {
                char target[4096];
                auto n = ::readlinkat(from, name.c_str(), target, sizeof target - 1);
                if (n < 0 && errno == ENOENT) continue;
                if (n < 0) return fail(errno_text("cannot read the link " + dir + "/" + name));
                target[n] = 0;
                if (::symlinkat(target, stage, name.c_str()) != 0 ||
                    ::fchownat(stage, name.c_str(), e.st_uid, e.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
                    return fail(errno_text("cannot copy the link " + dir + "/" + name));
                continue;
            }
            unique_fd tree(::open_tree(from, name.c_str(),
                                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW |
                                          AT_NO_AUTOMOUNT));
            if (!tree && errno == ENOENT) continue;
            struct stat t {};
            if (!tree || ::fstat(tree.get(), &t) != 0) return fail(errno_text("cannot bind " + dir + "/" + name));
            bool made_point = S_ISDIR(t.st_mode)
                                  ? ::mkdirat(stage, name.c_str(), 0755) == 0
                                  : unique_fd(::openat(stage, name.c_str(),
                                                      O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600))
                                        .get() >= 0;
            if (!made_point || ::move_mount(tree.get(), "", stage, name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
                return fail(errno_text("cannot bind " + dir + "/" + name));
        }
        return true;
    }

    // A private copy of `source` as `name` in the directory `dir`.
    bool write_copy(int dir, const std::string& name, const placement& step, int source) {
        unique_fd out(::openat(dir, name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!out || !copy_bytes(source, out.get())) return fail(errno_text("cannot copy " + step.path));
        timespec times[2] = {{0, UTIME_OMIT}, {step.mtime_ns / 1'000'000'000, step.mtime_ns % 1'000'000'000}};
        if (times[1].tv_nsec < 0) times[1] = {0, UTIME_OMIT};
        // (chown first: it clears set-id bits, which no copy has anyway.)
        if (::fchown(out.get(), step.uid, step.gid) != 0 || ::fchmod(out.get(), step.mode & 0777) != 0 ||
            ::futimens(out.get(), times) != 0)
            return fail(errno_text("cannot give " + step.path + " its mode"));
        return true;
    }

    // A directory made here: `name` in `dir`, or the one made by an earlier step.
    unique_fd make_dir(int dir, const std::string& name, const std::string& path, mode_t mode) {
        bool fresh = ::mkdirat(dir, name.c_str(), mode) == 0;
        if (!fresh && errno != EEXIST) {
            fail(errno_text("cannot make " + path));
            return unique_fd{};
        }
        unique_fd made_dir(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!made_dir || ::fstat(made_dir.get(), &st) != 0) {
            fail(errno_text("cannot make " + path));
            return unique_fd{};
        }
        auto id = std::make_pair(st.st_dev, st.st_ino);
        // Made now, or by an earlier step: anything else appeared on the host
        // meanwhile (and is bound here), and is not ours to write into.
        if (fresh) made.insert(id);
        else if (!made.count(id)) {
            fail(path + " appeared on the host meanwhile");
            return unique_fd{};
        }
        return made_dir;
    }

    // Over a directory of the host: the steps' files made on the stage, then
    // the stage moved over the very directory that was listed.
    bool take_over(const unit& u) {
        unique_fd host_dir(::open(u.where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!host_dir) return fail(errno_text("cannot open " + u.where));
        if (on_kernel_fs(host_dir.get())) return fail(u.where + " is on one of the kernel's file systems");
        auto stage = mount_stage(u.where);
        if (!stage || !fill(stage.get(), host_dir.get(), u.where)) return false;
        for (auto& [i, missing] : u.steps) {
            auto& step = plan.steps[i];
            unique_fd dir(::dup(stage.get()));
            std::string path = u.where;
            for (std::size_t k = 0; k + 1 < missing.size(); ++k) {
                path += (path == "/" ? "" : "/") + missing[k];
                dir = make_dir(dir.get(), missing[k], path, 0755);
                if (!dir) return false;
            }
            auto& name = missing.back();
            path += (path == "/" ? "" : "/") + name;
            switch (step.what) {
            case placement::action::make_dir: {
                auto made_dir = make_dir(dir.get(), name, path, 0700);
                if (!made_dir) return false;
                if (::fchown(made_dir.get(), step.uid, step.gid) != 0 || ::fchmod(made_dir.get(), step.mode) != 0)
                    return fail(errno_text("cannot give " + path + " its mode"));
                break;
            }
            case placement::action::copy_file:
                if (!write_copy(dir.get(), name, step, sources[i].get())) return false;
                break;
            case placement::action::bind_file: {
                unique_fd point(::openat(dir.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                                        0600));
                if (!point || ::move_mount(sources[i].get(), "", dir.get(), name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
                    return fail(errno_text("cannot put the parent's " + path + " in place"));
                break;
            }
            }
        }
        if (u.where == "/") {
            // The tmpfs becomes the namespace's root; the old one goes (its
            // entries stay, bound in the new one).
            if (::fchdir(stage.get()) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0 ||
                ::umount2(".", MNT_DETACH) != 0 || ::chdir("/") != 0)
                return fail(errno_text("cannot make the child's root its own"));
            ::umount2(plan.stage.c_str(), MNT_DETACH);  // its copy, bound in with the host's tree
            return true;
        }
        if (::move_mount(AT_FDCWD, plan.stage.c_str(), host_dir.get(), "", MOVE_MOUNT_T_EMPTY_PATH) != 0)
            return fail(errno_text("cannot put the child's own " + u.where + " in place"));
        return true;
    }

    // Over a file of the host: the parent's version, bound on the very file opened.
    bool cover(const unit& u) {
        auto& step = plan.steps[u.file_step];
        unique_fd target(::open(u.where.c_str(), O_PATH | O_CLOEXEC));
        struct stat st {};
        if (!target || ::fstat(target.get(), &st) != 0) return fail(errno_text("cannot open " + u.where));
        if (!S_ISREG(st.st_mode)) return fail(u.where + " is not a regular file here");
        if (on_kernel_fs(target.get())) return fail(u.where + " is on one of the kernel's file systems");
        unique_fd tree;
        if (step.what == placement::action::copy_file) {
            // A private copy, on a tmpfs of its own that only the bind keeps.
            auto scratch = mount_stage(u.where);
            if (!scratch || !write_copy(scratch.get(), "copy", step, sources[u.file_step].get())) return false;
            tree = unique_fd(::open_tree(scratch.get(), "copy", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
            ::umount2(plan.stage.c_str(), MNT_DETACH);
            if (!tree) return fail(errno_text("cannot bind the copy of " + u.where));
        }
        int source = tree ? tree.get() : sources[u.file_step].get();
        if (::move_mount(source, "", target.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
            return fail(errno_text("cannot put the parent's " + u.where + " in place"));
        return true;
    }
};

// Every source first, while the cache is in this namespace: once the
// root is the child's own, the host's mounts are no longer here to bind
// from. A bind is a detached mount of the entry, read-only, ready to move
// in place; a copy reads from an open file. One per step, -1 for none.
// Returns why not, or empty.
std::string open_sources(const placement_plan& plan, std::vector<unique_fd>& sources) {
    for (auto& step : plan.steps) {
        if (step.source.empty()) {
            sources.emplace_back(-1);
            continue;
        }
        if (step.what == placement::action::copy_file) {
            sources.emplace_back(::open(step.source.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!sources.back()) return errno_text("cannot open the cached " + step.path);
            continue;
        }
        unique_fd entry(::open(step.source.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        sources.emplace_back(entry ? ::open_tree(entry.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)
                                   : -1);
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if (!sources.back() || ::mount_setattr(sources.back().get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
            return errno_text("cannot bind the cached " + step.path);
    }
    return {};
}

}  // namespace

std::string carry_out(const placement_plan& plan) {
    if (plan.steps.empty()) return {};
    // Modes are the steps' own, not this process's umask's.
    struct umask_guard {
        mode_t old = ::umask(0);
        ~umask_guard() { ::umask(old); }
    } no_umask;
    std::vector<unique_fd> sources;
    if (auto why = open_sources(plan, sources); !why.empty()) return why;
    // Where each step lands, looked at on the host before anything is mounted.
    std::map<std::string, unit> dirs;
    std::vector<unit> units;
    for (std::size_t i = 0; i < plan.steps.size(); ++i) {
        auto& step = plan.steps[i];
        std::string why;
        auto where = resolve(step.path, why);
        if (!where) return why;
        auto target = where->existing;
        for (auto& name : where->missing) target += (target == "/" ? "" : "/") + name;
        if (in_kernel_tree(target)) return step.path + " leads to " + target + ", under /proc, /sys or /dev";
        if (runs_criu(target)) return step.path + " leads to " + target + ", which the loader or CRIU itself reads";
        // A user's link may lead only into that user's own directories: not
        // to put the user's bytes where the host's programs look (/etc, /usr).
        if (where->link_owner) {
            auto dir = where->missing.empty() ? target.substr(0, std::max<std::size_t>(1, target.rfind('/')))
                                              : where->existing;
            struct stat owner {};
            if (::stat(dir.c_str(), &owner) != 0 || owner.st_uid != *where->link_owner)
                return fmt::format("{} leads through a link of uid {} to {}, which is not that user's", step.path,
                                   *where->link_owner, dir);
        }
        if (!where->missing.empty()) {
            auto& u = dirs[where->existing];
            u.where = where->existing;
            u.directory = true;
            u.steps.emplace_back(i, where->missing);
        } else if (step.what != placement::action::make_dir) {
            units.push_back(unit{target, false, i, {}});
        }
        // (A directory the host has is the host's, whatever its mode: CRIU says so if it matters.)
    }
    for (auto& [path, u] : dirs) units.push_back(std::move(u));
    // The deepest first: a directory taken over later shows them, bound with the rest of its tree.
    std::stable_sort(units.begin(), units.end(), [](auto& a, auto& b) { return a.depth() > b.depth(); });
    placer p{plan, sources, {}, {}};
    for (auto& u : units)
        if (!(u.directory ? p.take_over(u) : p.cover(u))) return p.error;
    // Nothing from a peer, nor any set-id program reading it, gains rights here.
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_NOSUID;
    if (::mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr) != 0)
        return errno_text("cannot make the child's mounts nosuid");
    return {};
}

}  // namespace rfork::agent
