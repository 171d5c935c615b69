// Opens FILE, reads its first SKIP bytes and forks with the file still open.
// The child reports its offset and reads the next COUNT bytes; the parent
// does the same once the child has ended (so the child's read cannot have
// moved it).
//
//   fidelity_file HOST:PORT FILE SKIP COUNT
//
// Lines: "before offset=N", "SIDE offset=N next=BYTES offset_after=N" (newlines
// in BYTES written as '|'), "parent waited status=N".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

// Reads exactly `count` bytes unless the file ends or fails first.
std::string read_exactly(int fd, std::size_t count) {
    std::string data;
    while (data.size() < count) {
        char buffer[4096];
        auto n = ::read(fd, buffer, std::min(sizeof buffer, count - data.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        data.append(buffer, static_cast<std::size_t>(n));
    }
    return data;
}

std::string report(int fd, const char* side, std::size_t count) {
    auto offset = ::lseek(fd, 0, SEEK_CUR);
    std::string next = read_exactly(fd, count);
    for (auto& c : next)
        if (c == '\n') c = '|';
    auto after = ::lseek(fd, 0, SEEK_CUR);
    return std::string(side) + " offset=" + std::to_string(offset) + " next=" + next +
           " offset_after=" + std::to_string(after);
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint, std::string path, std::size_t skip,
                         std::size_t count) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        std::fprintf(stderr, "fidelity_file: cannot open %s: %s\n", path.c_str(), std::strerror(errno));
        co_return 3;
    }
    std::string first = read_exactly(fd, skip);
    std::printf("before offset=%lld read=%zu\n", static_cast<long long>(::lseek(fd, 0, SEEK_CUR)), first.size());
    std::fflush(stdout);

    auto forked = co_await probe::fork_or_report(ctx, endpoint);
    if (!forked) co_return 1;
    rfork::fork_result& r = *forked;
    if (r.is_child()) {
        std::string line = report(fd, "child", count);
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
        co_return 0;
    }
    co_await probe::wait_and_report(r);
    std::string line = report(fd, "parent", count);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: fidelity_file HOST:PORT FILE SKIP COUNT\n");
        return 2;
    }
    return probe::run_main("fidelity_file", [&](asio::io_context& ctx) { return run(ctx, argv[1], argv[2], std::stoul(argv[3]), std::stoul(argv[4])); });
}
