#include "file_placement.hpp"

#include <rfork/detail/wire.hpp>

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
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

// Whether the host's regular file at `path` is the one described.
bool same_file(const std::string& path, const struct stat& st, const protocol::file_description& file,
               file_identity_cache& host_files) {
    if (static_cast<std::uint64_t>(st.st_size) != file.size || (st.st_mode & 07777) != file.mode) return false;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return false;
    struct stat opened {};
    std::optional<file_identity> id;
    if (::fstat(fd, &opened) == 0 && S_ISREG(opened.st_mode)) id = host_files.identify(fd, opened);
    ::close(fd);
    if (!id) return false;
    // CRIU itself takes a build-id and size for the same file.
    if (!file.build_id.empty() && !id->build_id.empty()) return id->build_id == file.build_id;
    return id->sha256 == file.sha256;
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
        if (file.size > limits.max_file_size)
            return refuse(fmt::format("it is {} bytes, more than this agent takes (--max-file-size {})", file.size,
                                      limits.max_file_size));
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

class fd_guard {
public:
    explicit fd_guard(int fd = -1) : fd_(fd) {}
    fd_guard(fd_guard&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    fd_guard& operator=(fd_guard&& o) noexcept {
        std::swap(fd_, o.fd_);
        return *this;
    }
    ~fd_guard() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_;
};

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// `path` as far as it exists here, links followed (as CRIU's open will
// follow them), and the components after that which do not exist.
struct resolved {
    std::string existing;
    std::deque<std::string> missing;
};

std::optional<resolved> resolve(const std::string& path, std::string& error) {
    std::deque<std::string> left;
    auto split_into = [](std::string_view p, std::deque<std::string>& out, bool front) {
        std::vector<std::string> parts;
        for (std::size_t start = 0; start <= p.size();) {
            auto end = p.find('/', start);
            if (end == std::string_view::npos) end = p.size();
            if (end > start) parts.emplace_back(p.substr(start, end - start));
            start = end + 1;
        }
        if (front) out.insert(out.begin(), parts.begin(), parts.end());
        else out.insert(out.end(), parts.begin(), parts.end());
    };
    split_into(path, left, false);
    std::string at = "/";
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
            if (errno == ENOENT) return resolved{at, left};
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
            continue;
        }
        if (!S_ISDIR(st.st_mode) && !left.empty()) {
            error = next + " is not a directory here";
            return std::nullopt;
        }
        at = next;
    }
    return resolved{at, {}};
}

struct placer {
    const placement_plan& plan;
    std::set<dev_t> ours;  // tmpfs mounts made here: directories of the child's own
    std::string error;

    bool fail(std::string why) {
        error = std::move(why);
        return false;
    }

    bool is_ours(const std::string& dir) {
        struct stat st {};
        return ::stat(dir.c_str(), &st) == 0 && ours.count(st.st_dev);
    }

    // A tmpfs on the stage that shows all that `dir` holds: a bind of each
    // of its entries (with what is mounted under them), a copy of each link.
    bool fill_stage(const std::string& dir) {
        if (::mount("rfork-files", plan.stage.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
            return fail(errno_text("cannot mount a tmpfs for " + dir));
        fd_guard stage(::open(plan.stage.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        fd_guard from(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        struct stat st {};
        if (!stage || !from || ::fstat(from.get(), &st) != 0) return fail(errno_text("cannot open " + dir));
        if (::fchmod(stage.get(), st.st_mode & 07777) != 0 || ::fchown(stage.get(), st.st_uid, st.st_gid) != 0)
            return fail(errno_text("cannot give the tmpfs for " + dir + " its mode"));
        int listing = ::dup(from.get());
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
            if (::fstatat(from.get(), name.c_str(), &e, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
            if (S_ISLNK(e.st_mode)) {
                char target[4096];
                auto n = ::readlinkat(from.get(), name.c_str(), target, sizeof target - 1);
                if (n < 0) continue;
                target[n] = 0;
                if (::symlinkat(target, stage.get(), name.c_str()) != 0)
                    return fail(errno_text("cannot copy the link " + dir + "/" + name));
                ::fchownat(stage.get(), name.c_str(), e.st_uid, e.st_gid, AT_SYMLINK_NOFOLLOW);
                continue;
            }
            fd_guard tree(::open_tree(from.get(), name.c_str(),
                                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW));
            struct stat t {};
            if (!tree || ::fstat(tree.get(), &t) != 0) return fail(errno_text("cannot bind " + dir + "/" + name));
            if (S_ISDIR(t.st_mode)) {
                if (::mkdirat(stage.get(), name.c_str(), 0755) != 0)
                    return fail(errno_text("cannot show " + dir + "/" + name));
            } else {
                fd_guard point(::openat(stage.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
                if (!point) return fail(errno_text("cannot show " + dir + "/" + name));
            }
            if (::move_mount(tree.get(), "", stage.get(), name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
                return fail(errno_text("cannot bind " + dir + "/" + name));
        }
        return true;
    }

    // `dir`, a directory of the host, becomes one of the child's own.
    bool take_over(const std::string& dir) {
        if (!fill_stage(dir)) return false;
        if (dir == "/") {
            // The tmpfs becomes the namespace's root; the old one goes (its
            // entries stay, bound in the new one).
            if (::chdir(plan.stage.c_str()) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0 ||
                ::umount2(".", MNT_DETACH) != 0 || ::chdir("/") != 0)
                return fail(errno_text("cannot make the child's root its own"));
            ::umount2(plan.stage.c_str(), MNT_DETACH);  // its copy, bound in with the host's /run
        } else if (::mount(plan.stage.c_str(), dir.c_str(), nullptr, MS_MOVE, nullptr) != 0) {
            return fail(errno_text("cannot put the child's own " + dir + " in place"));
        }
        struct stat st {};
        if (::stat(dir.c_str(), &st) != 0) return fail(errno_text("cannot look at the child's own " + dir));
        ours.insert(st.st_dev);
        return true;
    }

    static bool copy_bytes(int from, int to) {
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

    // A file of the child's own at `path`, in a tmpfs: a copy of the source.
    bool write_copy(const placement& step, int source) {
        fd_guard out(::open(step.path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!out || !copy_bytes(source, out.get())) return fail(errno_text("cannot copy " + step.path));
        timespec times[2] = {{0, UTIME_OMIT}, {step.mtime_ns / 1'000'000'000, step.mtime_ns % 1'000'000'000}};
        if (times[1].tv_nsec < 0) times[1] = {0, UTIME_OMIT};
        if (::fchown(out.get(), step.uid, step.gid) != 0 || ::fchmod(out.get(), step.mode) != 0)
            return fail(errno_text("cannot give " + step.path + " its mode"));
        ::futimens(out.get(), times);
        return true;
    }

    // The cache entry itself (a detached bind mount of it, `tree`), at `path`.
    bool bind(const std::string& path, int tree) {
        if (::move_mount(tree, "", AT_FDCWD, path.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
            return fail(errno_text("cannot put the parent's " + path + " in place"));
        return true;
    }

    bool place(const placement& step, int source) {
        std::string why;
        auto where = resolve(step.path, why);
        if (!where) return fail(why);
        auto target = where->existing;
        for (auto& name : where->missing) target += (target == "/" ? "" : "/") + name;
        if (in_kernel_tree(target)) return fail(step.path + " leads to " + target + ", under /proc, /sys or /dev");
        if (where->missing.empty()) {
            struct stat st {};
            if (::stat(target.c_str(), &st) != 0) return fail(errno_text("cannot look at " + target));
            if (step.what == placement::action::make_dir) {
                // One made here already, as the parent of an earlier step: its mode now.
                if (S_ISDIR(st.st_mode) && ours.count(st.st_dev))
                    return ::chmod(target.c_str(), step.mode) == 0 && ::chown(target.c_str(), step.uid, step.gid) == 0
                               ? true
                               : fail(errno_text("cannot give " + target + " its mode"));
                return S_ISDIR(st.st_mode) ? true : fail(target + " is not a directory here");
            }
            if (!S_ISREG(st.st_mode)) return fail(target + " is not a regular file here");
            if (step.what == placement::action::bind_file) return bind(target, source);
            // A private copy over the host's version: its directory becomes
            // the child's own, where the copy takes the place of the host's.
            auto parent = target.substr(0, std::max<std::size_t>(1, target.rfind('/')));
            if (!is_ours(parent) && !take_over(parent)) return false;
            ::umount2(target.c_str(), MNT_DETACH);  // the host's version, as bound there
            if (::unlink(target.c_str()) != 0) return fail(errno_text("cannot replace " + target));
            return write_copy({step.what, target, {}, step.mode, step.uid, step.gid, step.mtime_ns}, source);
        }
        if (!is_ours(where->existing) && !take_over(where->existing)) return false;
        // Now inside a tmpfs of the child's: whatever is missing is made.
        std::string at = where->existing;
        for (std::size_t i = 0; i + 1 < where->missing.size(); ++i) {
            at += (at == "/" ? "" : "/") + where->missing[i];
            if (::mkdir(at.c_str(), 0755) != 0) return fail(errno_text("cannot make " + at));
        }
        switch (step.what) {
        case placement::action::make_dir:
            if (::mkdir(target.c_str(), step.mode) != 0 || ::chmod(target.c_str(), step.mode) != 0 ||
                ::chown(target.c_str(), step.uid, step.gid) != 0)
                return fail(errno_text("cannot make " + target));
            return true;
        case placement::action::copy_file: return write_copy({step.what, target, {}, step.mode, step.uid, step.gid,
                                                              step.mtime_ns}, source);
        case placement::action::bind_file: {
            fd_guard point(::open(target.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
            if (!point) return fail(errno_text("cannot make " + target));
            return bind(target, source);
        }
        }
        return true;
    }
};

}  // namespace

std::string carry_out(const placement_plan& plan) {
    if (plan.steps.empty()) return {};
    // Every source first, while the cache is in this namespace: once the
    // root is the child's own, the host's mounts are no longer here to bind
    // from. A bind is a detached mount of the entry, read-only, ready to
    // move in place; a copy reads from an open file.
    std::vector<fd_guard> sources;
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
        fd_guard entry(::open(step.source.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        sources.emplace_back(entry ? ::open_tree(entry.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)
                                   : -1);
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if (!sources.back() || ::mount_setattr(sources.back().get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
            return errno_text("cannot bind the cached " + step.path);
    }
    placer p{plan, {}, {}};
    for (std::size_t i = 0; i < plan.steps.size(); ++i)
        if (!p.place(plan.steps[i], sources[i].get())) return p.error;
    // Nothing from a peer, nor any set-id program reading it, gains rights here.
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_NOSUID;
    if (::mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr) != 0)
        return errno_text("cannot make the child's mounts nosuid");
    return {};
}

}  // namespace rfork::agent
