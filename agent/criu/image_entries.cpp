#include "criu/image_entries.hpp"

#include "common/process.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace rfork::agent {

std::optional<std::vector<unsigned char>> read_image_file(int dir_fd, const char* name) {
    unique_fd fd(::openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    struct stat st {};
    if (!fd) return errno == ENOENT ? std::optional<std::vector<unsigned char>>{std::vector<unsigned char>{}}
                                    : std::nullopt;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::uint64_t>(st.st_size) > max_entries_image)
        return std::nullopt;
    std::vector<unsigned char> bytes(static_cast<std::size_t>(st.st_size));
    for (std::size_t done = 0; done < bytes.size();) {
        auto n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return std::nullopt;
        done += static_cast<std::size_t>(n);
    }
    return bytes;
}

}  // namespace rfork::agent
