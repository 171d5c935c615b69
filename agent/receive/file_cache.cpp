#include "receive/file_cache.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace rfork::agent {

std::string entry_name(const cache_key& key) {
    return fmt::format("{}-{:04o}-{}-{}", to_hex(key.sha256), key.mode, key.uid, key.gid);
}

std::optional<cache_key> parse_entry_name(const std::string& name) {
    cache_key key;
    if (name.size() < 64 + 1 + 4 + 4 || name[64] != '-') return std::nullopt;
    for (std::size_t i = 0; i < 32; ++i) {
        int value = 0;
        for (std::size_t j = 0; j < 2; ++j) {
            char c = name[2 * i + j];
            int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (digit < 0) return std::nullopt;
            value = value * 16 + digit;
        }
        key.sha256[i] = static_cast<unsigned char>(value);
    }
    unsigned mode = 0, uid = 0, gid = 0;
    char tail = 0;
    if (std::sscanf(name.c_str() + 65, "%4o-%u-%u%c", &mode, &uid, &gid, &tail) != 3) return std::nullopt;
    key.mode = mode, key.uid = uid, key.gid = gid;
    if ((key.mode & ~0777u) != 0 || entry_name(key) != name) return std::nullopt;  // exactly as written
    return key;
}

file_cache::file_cache(std::string path, std::uint64_t capacity) : dir_(std::move(path)), capacity_(capacity) {
    // Made when the first file arrives: an agent that never takes one leaves no trace.
    struct stat st {};
    if (::lstat(dir_.c_str(), &st) != 0 && errno == ENOENT) return;
    std::string error;
    auto listing = open_dir(false, error);
    if (!listing) throw std::runtime_error(error);
    // What an earlier run left: its entries, the oldest (by when they were named) first to go.
    DIR* d = ::fdopendir(listing.get());
    if (!d) throw std::runtime_error(fmt::format("cannot list the file cache {}", dir_));
    std::vector<std::pair<std::int64_t, std::pair<cache_key, std::uint64_t>>> found;
    while (auto* e = ::readdir(d)) {
        auto key = parse_entry_name(e->d_name);
        struct stat est {};
        if (!key || ::fstatat(listing.get(), e->d_name, &est, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(est.st_mode))
            continue;
        found.push_back({est.st_ctim.tv_sec, {*key, static_cast<std::uint64_t>(est.st_size)}});
    }
    ::closedir(d);
    listing.release();  // closedir closed it
    std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first < b.first; });
    for (auto& [when, item] : found) add(item.first, item.second);
    evict();
}

unique_fd file_cache::open_dir(bool create, std::string& error) const {
    if (create) {
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(dir_).parent_path(), ec);
        if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
            error = fmt::format("cannot make the file cache {}: {}", dir_, std::strerror(errno));
            return {};
        }
    }
    unique_fd fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) {
        error = fmt::format("cannot open the file cache {}: {}", dir_, std::strerror(errno));
        return {};
    }
    // Children see its entries: nobody else may have written them.
    if (st.st_uid != 0 || (st.st_mode & 0077) != 0) {
        error = fmt::format("the file cache {} must be root's alone (mode 0700), not uid {} mode {:04o}", dir_,
                            st.st_uid, st.st_mode & 07777);
        return {};
    }
    return fd;
}

void file_cache::touch(std::map<cache_key, entry>::iterator it) {
    uses_.splice(uses_.begin(), uses_, it->second.use);
}

void file_cache::add(const cache_key& key, std::uint64_t size) {
    auto [it, fresh] = entries_.try_emplace(key);
    if (!fresh) {
        touch(it);
        return;
    }
    uses_.push_front(key);
    it->second.use = uses_.begin();
    it->second.size = size;
    size_ += size;
}

bool file_cache::has(const cache_key& key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    std::string error;
    auto dir = open_dir(false, error);
    struct stat st {};
    // Gone behind our back (an operator cleaned up): not here after all.
    if (!dir || ::fstatat(dir.get(), entry_name(key).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
        size_ -= it->second.size;
        uses_.erase(it->second.use);
        entries_.erase(it);
        return false;
    }
    touch(it);
    return true;
}

bool file_cache::pin(const cache_key& key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    ++it->second.pins;
    return true;
}

void file_cache::unpin(const cache_key& key) {
    if (auto it = entries_.find(key); it != entries_.end() && it->second.pins > 0) --it->second.pins;
    evict();
}

void file_cache::evict() {
    if (size_ <= capacity_) return;
    std::string error;
    auto dir = open_dir(false, error);
    for (auto use = uses_.end(); size_ > capacity_ && use != uses_.begin();) {
        --use;
        auto it = entries_.find(*use);
        if (it->second.pins > 0) continue;
        if (dir) ::unlinkat(dir.get(), entry_name(it->first).c_str(), 0);
        size_ -= it->second.size;
        entries_.erase(it);
        use = uses_.erase(use);
    }
}

file_cache::incoming::incoming(file_cache& cache, cache_key key, std::uint64_t size, std::int64_t mtime_ns)
    : cache_(&cache), key_(key), size_(size), mtime_ns_(mtime_ns), hash_(std::make_unique<sha256_stream>()) {
    auto dir = cache.open_dir(true, problem_);
    // Unnamed until whole and proven: a failure halfway leaves nothing.
    if (dir) fd_.reset(::openat(dir.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (problem_.empty() && !fd_)
        problem_ = fmt::format("cannot make a file in the file cache {}: {}", cache.dir_, std::strerror(errno));
}

std::string file_cache::incoming::write(const unsigned char* data, std::size_t size) {
    if (!fd_) return problem_;
    if (size > missing()) return "more bytes than the file's announced size";
    hash_->update(data, size);
    for (std::size_t done = 0; done < size;) {
        auto n = ::write(fd_.get(), data + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fmt::format("cannot write into the file cache {}: {}", cache_->dir_, std::strerror(errno));
        done += static_cast<std::size_t>(n);
    }
    written_ += size;
    return {};
}

std::string file_cache::incoming::finish() {
    if (!fd_) return problem_;
    if (missing() > 0) return fmt::format("it ended {} bytes short", missing());
    if (hash_->finish() != key_.sha256) return "its bytes do not have the SHA-256 it was announced with";
    // The mode and owner the child sees; the time it was last changed at the origin.
    timespec times[2] = {{0, UTIME_OMIT}, {mtime_ns_ / 1'000'000'000, mtime_ns_ % 1'000'000'000}};
    if (times[1].tv_nsec < 0) times[1] = {0, UTIME_OMIT};
    if (::fchown(fd_.get(), key_.uid, key_.gid) != 0 || ::fchmod(fd_.get(), key_.mode) != 0 ||
        ::futimens(fd_.get(), times) != 0)
        return fmt::format("cannot set its mode and owner: {}", std::strerror(errno));
    auto name = entry_name(key_);
    auto self = fmt::format("/proc/self/fd/{}", fd_.get());
    std::string error;
    auto dir = cache_->open_dir(false, error);
    if (!dir) return error;
    // (linkat of an O_TMPFILE through /proc needs no CAP_DAC_READ_SEARCH.)
    if (::linkat(AT_FDCWD, self.c_str(), dir.get(), name.c_str(), AT_SYMLINK_FOLLOW) != 0 && errno != EEXIST)
        return fmt::format("cannot name it in the file cache {}: {}", cache_->dir_, std::strerror(errno));
    fd_.reset();
    cache_->add(key_, size_);
    return {};
}

}  // namespace rfork::agent
