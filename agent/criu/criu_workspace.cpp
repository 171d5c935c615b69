#include "criu/criu_workspace.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace rfork::agent {

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

unique_fd make_dir(const job_dir& job, const char* name) {
    auto path = job.path() / name;
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) fail("mkdir " + path.string());
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) fail("open " + path.string());
    return fd;
}

// The directory and the files in it (all made by the agent, as root) get
// these owners and modes.
void give(int dir_fd, uid_t uid, gid_t gid, mode_t dir_mode, mode_t file_mode, const std::string& what) {
    if (::fchown(dir_fd, uid, gid) != 0 || ::fchmod(dir_fd, dir_mode) != 0) fail("chown " + what);
    unique_fd listing(::dup(dir_fd));
    DIR* dir = listing ? ::fdopendir(listing.get()) : nullptr;
    if (!dir) fail("list " + what);
    listing.release();
    ::rewinddir(dir);
    int saved = 0;
    while (auto* entry = ::readdir(dir)) {
        std::string name = entry->d_name;
        if (name == "." || name == "..") continue;
        // The agent made them all, as plain files: anything else is refused.
        if (entry->d_type != DT_REG) {
            saved = EINVAL;
            continue;
        }
        if (::fchownat(dir_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 ||
            ::fchmodat(dir_fd, name.c_str(), file_mode, 0) != 0)
            saved = errno;
    }
    ::closedir(dir);
    if (saved) errno = saved, fail("chown in " + what);
}

}  // namespace

criu_workspace::criu_workspace(const job_dir& job, const std::optional<run_as>& user, images_access access)
    : images_(make_dir(job, "images")), work_(make_dir(job, "work")) {
    if (!user) return;
    give(work_.get(), user->uid, user->gid, 0700, 0600, "work");
    if (access == images_access::write)
        give(images_.get(), user->uid, user->gid, 0700, 0600, "images");
    else
        give(images_.get(), 0, user->gid, 0750, 0640, "images");
}

std::optional<std::string> read_criu_file(int dir_fd, const std::string& name, std::size_t limit) {
    unique_fd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    std::string text;
    char buffer[64 * 1024];
    for (;;) {
        auto n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::nullopt;
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() >= limit) {
            text.resize(limit);
            break;
        }
    }
    return text;
}

}  // namespace rfork::agent
