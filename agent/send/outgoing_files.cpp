#include "send/outgoing_files.hpp"

#include "criu/image_entries.hpp"

#include <fdinfo.pb-c.h>
#include <remap-file-path.pb-c.h>

#include <fmt/format.h>
#include <linux/openat2.h>

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

namespace rfork::agent {

namespace {

// CRIU's images/magic.h.
constexpr std::uint32_t files_magic = 0x56303138;
constexpr std::uint32_t remap_fpath_magic = 0x59133954;

// Opens `path` inside `root` as CRIU's restore would find it from that root.
int open_in_root(int root_fd, const std::string& path, std::uint64_t flags) {
    open_how how{};
    how.flags = flags | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    auto relative = path == "/" ? std::string(".") : path.substr(1);
    return static_cast<int>(::syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof how));
}

// This thread's file-system identity as `as`, for as long as it lives: the
// kernel checks opens against the fsuid, fsgid and groups alone. (Raw system
// calls: glibc would change every thread's groups.)
class file_rights {
public:
    explicit file_rights(const run_as* as) {
        if (!as) return;
        saved_groups_.resize(static_cast<std::size_t>(std::max(0, ::getgroups(0, nullptr))));
        if (::getgroups(static_cast<int>(saved_groups_.size()), saved_groups_.data()) < 0) return;
        std::vector<gid_t> groups(as->groups.begin(), as->groups.end());
        groups.push_back(as->gid);
        if (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) return;
        changed_ = true;
        ::syscall(SYS_setfsgid, as->gid);
        ::syscall(SYS_setfsuid, as->uid);
        // setfsuid reports the previous value: asking again tells if it took.
        ok_ = static_cast<std::uint32_t>(::syscall(SYS_setfsuid, as->uid)) == as->uid &&
              static_cast<std::uint32_t>(::syscall(SYS_setfsgid, as->gid)) == as->gid;
    }
    ~file_rights() {
        if (!changed_) return;
        ::syscall(SYS_setfsuid, 0);
        ::syscall(SYS_setfsgid, 0);
        ::syscall(SYS_setgroups, saved_groups_.size(), saved_groups_.data());
    }
    file_rights(const file_rights&) = delete;
    file_rights& operator=(const file_rights&) = delete;
    bool ok(const run_as* as) const { return !as || ok_; }

private:
    std::vector<gid_t> saved_groups_;
    bool changed_ = false, ok_ = false;
};

protocol::file_kind kind_of(mode_t mode) {
    using protocol::file_kind;
    switch (mode & S_IFMT) {
    case S_IFDIR: return file_kind::directory;
    case S_IFCHR: return file_kind::char_device;
    case S_IFBLK: return file_kind::block_device;
    case S_IFIFO: return file_kind::fifo;
    case S_IFSOCK: return file_kind::socket;
    default: return file_kind::regular;
    }
}

}  // namespace

std::variant<std::vector<image_file_ref>, std::string> files_named_by(const std::vector<unsigned char>& files_img,
                                                                      const std::vector<unsigned char>& remaps_img) {
    std::set<std::uint32_t> remapped;  // deleted or unlinked files: CRIU recreates them from the image
    if (!remaps_img.empty()) {
        auto why = for_each_entry(remaps_img, remap_fpath_magic, "remap-fpath.img",
                                  [&](const unsigned char* data, std::size_t size) -> std::string {
                                      auto* e = remap_file_path_entry__unpack(nullptr, size, data);
                                      if (!e) return "an entry protobuf-c cannot decode";
                                      remapped.insert(e->orig_id);
                                      remap_file_path_entry__free_unpacked(e, nullptr);
                                      return {};
                                  });
        if (!why.empty()) return why;
    }
    std::map<std::string, bool> paths;  // path -> writable
    std::string odd;
    auto why = for_each_entry(files_img, files_magic, "files.img",
                              [&](const unsigned char* data, std::size_t size) -> std::string {
                                  auto* e = file_entry__unpack(nullptr, size, data);
                                  if (!e) return "an entry protobuf-c cannot decode";
                                  if (e->type == FD_TYPES__REG && e->reg && !(e->reg->has_ext && e->reg->ext) &&
                                      !remapped.count(e->reg->id) && e->reg->name) {
                                      std::string path = e->reg->name;
                                      if (!protocol::is_canonical_path(path)) {
                                          if (odd.empty()) odd = path;
                                      } else {
                                          auto access = e->reg->flags & O_ACCMODE;
                                          paths[path] |= access == O_WRONLY || access == O_RDWR;
                                      }
                                  }
                                  file_entry__free_unpacked(e, nullptr);
                                  return {};
                              });
    if (!why.empty()) return why;
    if (!odd.empty()) return fmt::format("the image names a file by a path rfork cannot bring along: '{}'", odd);
    std::vector<image_file_ref> refs;
    for (auto& [path, writable] : paths) refs.push_back({path, writable});
    return refs;
}

std::variant<std::vector<image_file_ref>, std::string> files_named_by_image(int images_dir_fd) {
    auto files = read_image_file(images_dir_fd, "files.img");
    auto remaps = read_image_file(images_dir_fd, "remap-fpath.img");
    if (!files || files->empty() || !remaps) return std::string("cannot read files.img of the image CRIU wrote");
    return files_named_by(*files, *remaps);
}

std::variant<outgoing_files, std::string> describe_files(const std::vector<image_file_ref>& refs, int root_fd,
                                                         const run_as* as, file_identity_cache& identities,
                                                         std::uint64_t max_size) {
    outgoing_files out;
    file_rights rights(as);
    if (!rights.ok(as)) return fmt::format("cannot look at the files with the rights of uid {}", as->uid);
    for (auto& ref : refs) {
        unique_fd fd(open_in_root(root_fd, ref.path, O_PATH));
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0)
            return fmt::format("cannot look at {} (which the process uses) as it does: {}", ref.path,
                               std::strerror(errno));
        protocol::file_description d;
        d.path = ref.path;
        d.kind = kind_of(st.st_mode);
        d.mode = st.st_mode & 07777;
        d.uid = st.st_uid, d.gid = st.st_gid;
        d.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
        d.rdev = st.st_rdev;
        d.writable = ref.writable;
        // The kernel's own files (/proc, /sys, /dev) are every host's: they
        // are not read (some never end, some do things when read).
        bool kernel_file = d.path.starts_with("/proc/") || d.path.starts_with("/sys/") || d.path.starts_with("/dev/");
        if (S_ISREG(st.st_mode) && kernel_file) {
            fd.reset();
            d.size = static_cast<std::uint64_t>(st.st_size);
        } else if (S_ISREG(st.st_mode)) {
            // Read with the process's rights: a file it may not read does not travel.
            fd.reset(open_in_root(root_fd, ref.path, O_RDONLY | O_NOCTTY | O_NONBLOCK));
            struct stat opened {};
            if (!fd || ::fstat(fd.get(), &opened) != 0 || opened.st_ino != st.st_ino || opened.st_dev != st.st_dev)
                return fmt::format("cannot read {} (which the process uses){}: {}", ref.path,
                                   as ? fmt::format(" as uid {}", as->uid) : "", std::strerror(errno));
            if (static_cast<std::uint64_t>(opened.st_size) > max_size)
                return fmt::format("{} (which the process uses) is {} bytes, more than this agent sends "
                                   "(--max-file-size {})",
                                   ref.path, opened.st_size, max_size);
            auto id = identities.identify(fd.get(), opened);
            if (!id) return fmt::format("cannot read {} (which the process uses) whole", ref.path);
            d.size = static_cast<std::uint64_t>(opened.st_size);
            d.sha256 = id->sha256;
            if (id->build_id.size() <= protocol::file_description::max_build_id)
                d.build_id.assign(id->build_id.begin(), id->build_id.end());
        } else {
            fd.reset();
        }
        out.manifest.files.push_back(std::move(d));
        out.fds.push_back(std::move(fd));
        if (out.manifest.files.size() > protocol::file_manifest::max_files)
            return fmt::format("the process uses more than {} files", protocol::file_manifest::max_files);
    }
    return out;
}

}  // namespace rfork::agent
