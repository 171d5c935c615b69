// Forks with the non-throwing form and reports the outcome; either way the
// process goes on and exits 0, as a program whose fork failed must be able to.
//
//   fork_or_report HOST:PORT [--hold-file PATH | --hold-unwritable PATH | --hold-io-uring | --memory MIB]
//
// --hold-file keeps PATH open across the fork (a file the other host may not
// have); --hold-unwritable keeps PATH open for writing, having taken away
// its own right to open it so (its mode becomes 0400): an image that opens a
// file its user may not; --hold-io-uring keeps an io_uring instance, which
// CRIU cannot dump; --memory fills MIB of memory first (a snapshot of 16 MiB
// or more goes with lazy pages).
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

asio::awaitable<void> report(asio::io_context& ctx, std::string endpoint) {
    std::error_code ec;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, ec);
    if (ec) {
        std::printf("error category=%s value=%d message=%s\n", ec.category().name(), ec.value(),
                    r.error_message().c_str());
    } else {
        std::printf("%s id=%s\n", r.is_child() ? "child" : "parent", r.child().id.c_str());
    }
    std::printf("%s goes on\n", r.is_child() ? "child" : "parent");
    std::fflush(stdout);
}

int main(int argc, char** argv) {
    if (argc != 2 && argc != 3 && argc != 4) {
        std::fprintf(stderr, "usage: fork_or_report HOST:PORT "
                             "[--hold-file PATH | --hold-unwritable PATH | --hold-io-uring | --memory MIB]\n");
        return 2;
    }
    int held = -1;
    std::vector<unsigned char> memory;
    if (argc == 4 && std::strcmp(argv[2], "--memory") == 0) {
        memory.resize(std::strtoul(argv[3], nullptr, 10) << 20);
        for (std::size_t i = 0; i < memory.size(); ++i) memory[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
        held = 0;
    } else if (argc == 4 && std::strcmp(argv[2], "--hold-file") == 0) {
        held = ::open(argv[3], O_RDONLY | O_CLOEXEC);
    } else if (argc == 4 && std::strcmp(argv[2], "--hold-unwritable") == 0) {
        held = ::open(argv[3], O_RDWR | O_CLOEXEC);
        if (held >= 0 && ::fchmod(held, 0400) != 0) held = -1;
    } else if (argc == 3 && std::strcmp(argv[2], "--hold-io-uring") == 0) {
        io_uring_params params{};
        held = static_cast<int>(::syscall(SYS_io_uring_setup, 4, &params));
    } else if (argc != 2) {
        std::fprintf(stderr, "fork_or_report: unknown option %s\n", argv[2]);
        return 2;
    }
    if (argc > 2 && held < 0) {
        std::fprintf(stderr, "fork_or_report: could not open what to hold: %s\n", std::strerror(errno));
        return 3;
    }
    asio::io_context ctx;
    auto done = asio::co_spawn(ctx, report(ctx, argv[1]), asio::use_future);
    ctx.run();
    done.get();
    return 0;
}
