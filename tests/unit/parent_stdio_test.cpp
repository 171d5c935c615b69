// The agent's use of a parent's stdio fds (agent/local/parent_stdio.hpp), on real
// pipes, sockets and files: only in a direction the open file allows, never
// changing its flags, never blocking the thread that runs the io_context.
#include "local/parent_stdio.hpp"

#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/use_future.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

using namespace rfork::agent;

namespace {

using namespace std::chrono_literals;

// Runs `ctx` until it has no more work, within a bound; false if `done` is
// not ready then (use_future may complete it from another thread, just after).
template <typename T>
bool run_until(asio::io_context& ctx, std::future<T>& done) {
    ctx.run_for(10s);
    return done.wait_for(10s) == std::future_status::ready;
}

asio::awaitable<std::string> read_from(input_source* in, std::size_t most = 100) {
    std::vector<unsigned char> buffer(most);
    auto n = co_await in->read(buffer);
    co_return std::string(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
}

asio::awaitable<bool> write_to(output_sink* out, std::string text) {
    co_await out->write(std::span(reinterpret_cast<const unsigned char*>(text.data()), text.size()));
    co_return true;
}

asio::awaitable<std::size_t> read_with(blocking_stream* stream) {
    std::vector<unsigned char> buffer(100);
    co_return co_await stream->read_some(buffer);
}

unique_fd dup_of(int fd) { return unique_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

struct scratch_dir {
    std::filesystem::path path;
    scratch_dir() {
        char templ[] = "/tmp/rfork-stdio-XXXXXX";
        REQUIRE(::mkdtemp(templ) != nullptr);
        path = templ;
    }
    ~scratch_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
};

}  // namespace

TEST_SUITE("unit.parent_stdio") {
    TEST_CASE("a stdio fd is used only in a direction its open file allows") {
        asio::io_context ctx;
        auto ex = ctx.get_executor();
        int ends[2];
        REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
        unique_fd read_end(ends[0]), write_end(ends[1]);
        // Root reopens /proc/self/fd/N of a pipe's read end for writing as well: never done.
        CHECK_FALSE(output_sink(ex, dup_of(read_end.get())).usable());
        CHECK_FALSE(input_source(ex, dup_of(write_end.get())).usable());
        CHECK(output_sink(ex, dup_of(write_end.get())).usable());
        CHECK(input_source(ex, dup_of(read_end.get())).usable());

        scratch_dir dir;
        auto fifo = (dir.path / "fifo").string();
        REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
        // O_PATH allows neither direction, though its access bits read as O_RDONLY.
        CHECK_FALSE(input_source(ex, unique_fd(::open(fifo.c_str(), O_PATH | O_CLOEXEC))).usable());
        CHECK_FALSE(output_sink(ex, unique_fd(::open(fifo.c_str(), O_PATH | O_CLOEXEC))).usable());
        auto file = (dir.path / "file").string();
        unique_fd created(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        CHECK_FALSE(output_sink(ex, unique_fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC))).usable());
        CHECK_FALSE(input_source(ex, unique_fd()).usable());
    }

    TEST_CASE("output to a stdout open only for reading is dropped") {
        asio::io_context ctx;
        int ends[2];
        REQUIRE(::pipe2(ends, O_CLOEXEC | O_NONBLOCK) == 0);
        unique_fd read_end(ends[0]), write_end(ends[1]);
        output_sink out(ctx.get_executor(), dup_of(read_end.get()));
        auto done = asio::co_spawn(ctx, write_to(&out, "not for this pipe"), asio::use_future);
        REQUIRE(run_until(ctx, done));
        char byte;
        CHECK(::read(read_end.get(), &byte, 1) < 0);  // EAGAIN: nothing there
    }

    TEST_CASE("a socket is read and written without ever becoming non-blocking") {
        int pair[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
        unique_fd ours(pair[0]), peer(pair[1]);
        asio::io_context ctx;
        // What the agent receives: another fd of the same open file.
        input_source in(ctx.get_executor(), dup_of(ours.get()));
        output_sink out(ctx.get_executor(), dup_of(ours.get()));
        REQUIRE(in.usable());
        // The read waits (nothing sent yet), then the peer speaks.
        auto got = asio::co_spawn(ctx, read_from(&in), asio::use_future);
        asio::post(ctx, [&] { CHECK(::write(peer.get(), "hi", 2) == 2); });
        REQUIRE(run_until(ctx, got));
        CHECK(got.get() == "hi");
        ctx.restart();
        auto sent = asio::co_spawn(ctx, write_to(&out, "back"), asio::use_future);
        REQUIRE(run_until(ctx, sent));
        char buffer[8] = {};
        CHECK(::read(peer.get(), buffer, sizeof buffer) == 4);
        CHECK(std::string(buffer) == "back");
        CHECK((::fcntl(ours.get(), F_GETFL) & O_NONBLOCK) == 0);
    }

    TEST_CASE("close ends a read waiting on a silent socket") {
        int pair[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
        unique_fd ours(pair[0]), peer(pair[1]);
        asio::io_context ctx;
        input_source in(ctx.get_executor(), dup_of(ours.get()));
        auto got = asio::co_spawn(ctx, read_from(&in), asio::use_future);
        asio::post(ctx, [&] { in.close(); });
        REQUIRE(run_until(ctx, got));
        CHECK(got.get().empty());
    }

    TEST_CASE("a regular file is written and read at the parent's offset") {
        scratch_dir dir;
        auto path = (dir.path / "file").string();
        unique_fd file(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        REQUIRE(file);
        asio::io_context ctx;
        output_sink out(ctx.get_executor(), dup_of(file.get()));
        REQUIRE(out.usable());
        auto sent = asio::co_spawn(ctx, write_to(&out, "written"), asio::use_future);
        REQUIRE(run_until(ctx, sent));
        CHECK(::lseek(file.get(), 0, SEEK_CUR) == 7);  // the offset is the parent's too
        REQUIRE(::lseek(file.get(), 0, SEEK_SET) == 0);
        input_source in(ctx.get_executor(), dup_of(file.get()));
        ctx.restart();
        auto got = asio::co_spawn(ctx, read_from(&in), asio::use_future);
        REQUIRE(run_until(ctx, got));
        CHECK(got.get() == "written");
    }

    TEST_CASE("a user's stdio is read as that user so that the kernel's checks at read time are the user's") {
        // /proc/PID/stat is open to all, but its start of stack (field 28)
        // reads as 0 to whoever may not trace that process (here a child of
        // the test's, root's), as the agent acting for a user must not.
        auto start_of_stack = [](const std::string& stat) {
            std::istringstream fields(stat.substr(stat.rfind(')') + 2));
            std::string field;
            for (int i = 3; i <= 28 && fields >> field; ++i) {
            }
            return std::stoull(field);
        };
        int hold[2];
        REQUIRE(::pipe2(hold, O_CLOEXEC) == 0);
        pid_t root_process = ::fork();
        REQUIRE(root_process >= 0);
        if (root_process == 0) {
            ::close(hold[1]);
            char byte;
            [[maybe_unused]] auto n = ::read(hold[0], &byte, 1);  // until the test closes its end
            ::_exit(0);
        }
        ::close(hold[0]);
        struct reap {
            pid_t pid;
            int fd;
            ~reap() {
                ::close(fd);
                ::waitpid(pid, nullptr, 0);
            }
        } reaped{root_process, hold[1]};
        auto stat_path = "/proc/" + std::to_string(root_process) + "/stat";
        run_as nobody{65534, 65534, {}, 0};
        for (const run_as* as : {static_cast<const run_as*>(nullptr), static_cast<const run_as*>(&nobody)}) {
            CAPTURE(as != nullptr);
            asio::io_context ctx;
            input_source in(ctx.get_executor(), unique_fd(::open(stat_path.c_str(), O_RDONLY | O_CLOEXEC)), as);
            REQUIRE(in.usable());
            auto got = asio::co_spawn(ctx, read_from(&in, 4096), asio::use_future);
            REQUIRE(run_until(ctx, got));
            auto stat = got.get();
            REQUIRE(stat.find(')') != std::string::npos);
            CHECK((start_of_stack(stat) == 0) == (as != nullptr));
            if (!as) continue;
            // The thread that read it has the user's file-system ids and no
            // capability, but root's real and saved uids: the user may not
            // signal or trace it, and with it the agent.
            std::vector<std::string> acting;
            for (auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
                std::ifstream status(task.path() / "status");
                std::string uids, caps;
                for (std::string line; std::getline(status, line);) {
                    if (line.starts_with("Uid:")) uids = line;
                    if (line.starts_with("CapEff:")) caps = line;
                }
                if (uids.ends_with("\t65534")) acting.push_back(uids + " " + caps);
            }
            REQUIRE(acting.size() == 1);
            CHECK(acting[0] == "Uid:\t0\t0\t0\t65534 CapEff:\t0000000000000000");
        }
    }

    TEST_CASE("close ends a wait for a call that blocks and its thread closes the fd once the call returns") {
        int ends[2];
        REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
        unique_fd read_end(ends[0]), write_end(ends[1]);
        asio::io_context ctx;
        blocking_stream stream(ctx.get_executor(), dup_of(read_end.get()));
        auto got = asio::co_spawn(ctx, read_with(&stream), asio::use_future);
        asio::post(ctx, [&] { stream.close(); });
        REQUIRE(run_until(ctx, got));
        CHECK(got.get() == 0u);
        // The thread may still be in read(): a byte lets it return (or finds
        // no reader left already). Then the write end reports an error.
        read_end.reset();
        auto ignore = std::signal(SIGPIPE, SIG_IGN);
        [[maybe_unused]] auto n = ::write(write_end.get(), "x", 1);
        std::signal(SIGPIPE, ignore);
        pollfd p{write_end.get(), 0, 0};  // POLLERR only, once the last reader has closed
        CHECK(::poll(&p, 1, 10'000) == 1);
        CHECK((p.revents & POLLERR) != 0);
    }
}
