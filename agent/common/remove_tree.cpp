#include "common/remove_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

namespace {

// One fd per level is open at once: a deeper tree is a hostile one.
constexpr int max_depth = 64;
// Entries made while a directory is emptied get a few more passes, not forever.
constexpr int max_passes = 4;
// Entries looked at in one removal, retries included, so that no tree the
// user built can make it long: a job's directory holds --max-image-files
// (16384) images and a few logs.
constexpr long max_entries = 1 << 18;

struct fd_holder {
    int fd;
    explicit fd_holder(int f) : fd(f) {}
    ~fd_holder() {
        if (fd >= 0) ::close(fd);
    }
    fd_holder(const fd_holder&) = delete;
    fd_holder& operator=(const fd_holder&) = delete;
};

// Which mount an open directory is on: its device, and the mount's id,
// which tells a bind mount of the same file system apart.
struct mount_of {
    dev_t dev;
    std::uint64_t id;
    bool operator==(const mount_of&) const = default;
};

std::optional<mount_of> mount_of_fd(int fd) {
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MNT_ID, &sx) != 0) return std::nullopt;
    return mount_of{makedev(sx.stx_dev_major, sx.stx_dev_minor), sx.stx_mask & STATX_MNT_ID ? sx.stx_mnt_id : 0};
}

std::vector<std::string> names_in(int dir) {
    std::vector<std::string> names;
    int listing = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (listing < 0) return names;
    DIR* d = ::fdopendir(listing);
    if (!d) {
        ::close(listing);
        return names;
    }
    // All names first: removing while reading may skip some.
    while (auto* entry = ::readdir(d)) {
        std::string name = entry->d_name;
        if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(d);
    return names;
}

// The removal of one tree: where it is, and how many more entries it may look at.
struct walk {
    mount_of top;
    long entries_left = max_entries;
};

bool empty_dir(int dir, walk& w, int depth);

// Removes `name` in `dir`: whatever it is now, never through a link.
bool remove_entry(int dir, const std::string& name, walk& w, int depth) {
    if (--w.entries_left < 0) return false;
    // Anything but a directory goes at once; a symlink is itself removed.
    if (::unlinkat(dir, name.c_str(), 0) == 0 || errno == ENOENT) return true;
    if (errno != EISDIR || depth >= max_depth) return false;
    // Swapped for a symlink since: ELOOP or ENOTDIR here, and a next pass unlinks it.
    fd_holder sub(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub.fd < 0) return false;
    auto at = mount_of_fd(sub.fd);
    if (!at || !(*at == w.top)) return false;  // a mount point: nothing of it is ours to remove
    bool emptied = empty_dir(sub.fd, w, depth + 1);
    return (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) && emptied;
}

bool empty_dir(int dir, walk& w, int depth) {
    for (int pass = 0; pass < max_passes && w.entries_left > 0; ++pass) {
        auto names = names_in(dir);
        if (names.empty()) return true;
        bool progress = false;
        for (auto& name : names) progress = remove_entry(dir, name, w, depth) || progress;
        if (!progress) return false;  // what nothing could remove stays: no retries of it
    }
    return names_in(dir).empty();
}

}  // namespace

bool remove_tree(const std::filesystem::path& path) {
    auto name = path.filename().string();
    if (name.empty() || name == "." || name == "..") return false;
    auto parent = path.parent_path();
    fd_holder up(::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (up.fd < 0) return errno == ENOENT;
    if (::unlinkat(up.fd, name.c_str(), 0) == 0 || errno == ENOENT) return true;
    if (errno != EISDIR) return false;
    fd_holder top(::openat(up.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (top.fd < 0) return false;
    auto at = mount_of_fd(top.fd);
    if (!at) return false;
    walk w{*at};
    bool emptied = empty_dir(top.fd, w, 1);
    return ::unlinkat(up.fd, name.c_str(), AT_REMOVEDIR) == 0 && emptied;
}

}  // namespace rfork::agent
