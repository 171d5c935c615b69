// Runs code of its own shared library (tests/integration/library), forks to
// the endpoint, and reports from both sides which version of the library
// runs and the path it was mapped from, with a checksum of the file at that
// path as the process sees it. A child that got the parent's library reports
// the parent's version and checksum, whatever its host holds at that path.
//
//   library_probe HOST:PORT
//
// Lines: "SIDE version=N path=PATH file_sum=HEX", "parent waited status=N".
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

extern "C" int rfork_probe_library_version();

namespace {

// The file this process maps the library from, as /proc/self/maps names it.
std::string library_path() {
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
        auto slash = line.find('/');
        if (slash != std::string::npos && line.find("librfork_probe_library") != std::string::npos)
            return line.substr(slash);
    }
    return "none";
}

// FNV-1a of the file's bytes.
std::uint64_t file_sum(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint64_t h = 1469598103934665603ull;
    for (std::istreambuf_iterator<char> it(in), end; it != end; ++it)
        h = (h ^ static_cast<unsigned char>(*it)) * 1099511628211ull;
    return in ? h : 0;
}

void report(const char* side) {
    auto path = library_path();
    std::printf("%s version=%d path=%s file_sum=%016" PRIx64 "\n", side, rfork_probe_library_version(),
                path.c_str(), file_sum(path));
    std::fflush(stdout);
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint) {
    report("before");
    auto forked = co_await probe::fork_or_report(ctx, endpoint);
    if (!forked) co_return 1;
    report(forked->is_child() ? "child" : "parent");
    if (forked->is_parent()) co_await probe::wait_and_report(*forked);
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: library_probe HOST:PORT\n");
        return 2;
    }
    return probe::run_main("library_probe", [&](asio::io_context& ctx) { return run(ctx, argv[1]); });
}
