// What a forked child does and what its parent sees of it: output, exit
// status, signals, stdin, life after the parent. Forks to ENDPOINT and then
// plays MODE on both sides; the parent reports what it saw as lines of
// "key=value" fields. Every line is one write(2), so nothing sits in a stdio
// buffer at the fork, and nothing waits without a bound.
//
//   child_program output ENDPOINT N M       child: N lines "out I" to stdout, M lines "err I" to stderr, interleaved
//   child_program bulk ENDPOINT MIB SEED    child: MIB MiB of child_pattern(SEED) to stdout (the parent writes only to stderr)
//   child_program exit ENDPOINT CODE|segv|abort   child: exits with CODE, or raises SIGSEGV, or aborts
//   child_program kill ENDPOINT             child: blocks; parent: kill(SIGTERM), wait, wait, kill again
//   child_program block ENDPOINT            child: blocks (up to 60 s); parent: waits
//   child_program late-wait ENDPOINT DIR    child: exits 7 at once; parent: waits for DIR/go, then waits twice
//   child_program many ENDPOINT COUNT DIR   COUNT children, all waited at once, first child's wait first; child I
//                                           exits 10+I once DIR/waited-(I+1) exists (the last at once), which the
//                                           parent writes when its wait for child I+1 returns: so the waits
//                                           can only all end if they are waited for at the same time
//   child_program outlive ENDPOINT DIR      parent: writes DIR/parent-pid, exits; child: waits for DIR/go, then writes
//   child_program stdin ENDPOINT forward|noforward [SECONDS]   child: reads stdin to its end (bounded: 10 s or
//                                           SECONDS); parent: waits, and reports whether its stdin is non-blocking
//   child_program readonly-stdout ENDPOINT REPORT   parent: stdout becomes a pipe's read end, stderr its write
//                                           end (the child's stderr is then relayed as its stdout); child: a
//                                           line to stderr, exits 7; parent: writes to REPORT what its stdout holds
//
// A parent that cannot do its part exits 1 with "error ..." on stderr.
#include "../event_wait.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

void write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        auto n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

// One line, one write(2).
__attribute__((format(printf, 2, 3))) void say(int fd, const char* format, ...) {
    char line[8192];
    va_list args;
    va_start(args, format);
    int n = std::vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (n < 0) return;
    auto size = std::min(static_cast<std::size_t>(n), sizeof line - 2);
    line[size++] = '\n';
    write_all(fd, line, size);
}

[[noreturn]] void end_child(int code) {
    std::fflush(nullptr);
    ::_exit(code);
}

// The byte stream of bulk mode: splitmix64 words, little-endian. The test
// computes the same bytes (child_test.cpp).
std::vector<unsigned char> child_pattern(std::uint64_t seed, std::size_t size) {
    std::vector<unsigned char> bytes(size);
    std::uint64_t state = seed;
    for (std::size_t i = 0; i < size; i += 8) {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        for (std::size_t b = 0; b < 8 && i + b < size; ++b) bytes[i + b] = static_cast<unsigned char>(z >> (8 * b));
    }
    return bytes;
}

// Waits until `path` exists, watching its directory; false after `bound`.
bool wait_for_path(const std::string& path, std::chrono::milliseconds bound) {
    std::filesystem::path p(path);
    return rfork::test::wait_for_new_file(p.parent_path().string(), p.filename().string(), bound);
}

// Reads fd 0 to its end, at most `bound` in all. "\n" shows as "\\n".
struct stdin_report {
    bool eof = false;
    std::string data;
    long ms = 0;
};

stdin_report read_stdin(std::chrono::milliseconds bound) {
    stdin_report report;
    auto start = clock_type::now();
    auto deadline = start + bound;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        if (left.count() <= 0) break;
        pollfd p{0, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char buffer[4096];
        auto n = ::read(0, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            report.eof = true;
            break;
        }
        report.data.append(buffer, static_cast<std::size_t>(n));
    }
    report.ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
    return report;
}

std::string escaped(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '\n') out += "\\n";
        else if (c == ' ') out += "\\s";
        else out += c;
    }
    return out;
}

// A child that blocks until a signal ends it, or gives up after 60 s: the
// bound is an alarm, whose (caught) signal ends the wait like any other.
[[noreturn]] void block_in_child(const rfork::fork_result& r) {
    say(1, "child blocking id=%s", r.child().id.c_str());
    struct sigaction wake {};
    wake.sa_handler = [](int) {};
    ::sigaction(SIGALRM, &wake, nullptr);
    ::alarm(60);
    ::pause();
    say(1, "child gave up blocking");
    end_child(99);
}

void report_parent(const rfork::fork_result& r) {
    say(1, "parent forked id=%s host=%s pid=%d", r.child().id.c_str(), r.child().host.c_str(), r.child().pid);
}

// ---- the modes --------------------------------------------------------------

asio::awaitable<int> output_mode(asio::io_context& ctx, std::string endpoint, int lines_out, int lines_err) {
    say(1, "parent before fork");
    say(2, "parent stderr before fork");
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        for (int i = 0; i < std::max(lines_out, lines_err); ++i) {
            if (i < lines_out) say(1, "out %d", i);
            if (i < lines_err) say(2, "err %d", i);
        }
        co_return 0;  // through main, like any program's end
    }
    // Only after the wait: the parent's lines never fall between the child's.
    int status = co_await r.wait();
    report_parent(r);
    say(1, "parent waited status=%d", status);
    say(2, "parent stderr waited");
    co_return 0;
}

asio::awaitable<int> bulk_mode(asio::io_context& ctx, std::string endpoint, std::size_t mib, std::uint64_t seed) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        auto bytes = child_pattern(seed, mib << 20);
        // Writes of many sizes, none aligned to anything.
        std::size_t done = 0;
        for (std::size_t k = 1; done < bytes.size(); ++k) {
            auto size = std::min(bytes.size() - done, 1 + (k * 7919) % 200'000);
            write_all(1, reinterpret_cast<const char*>(bytes.data() + done), size);
            done += size;
        }
        co_return 0;
    }
    int status = co_await r.wait();
    say(2, "parent forked id=%s", r.child().id.c_str());
    say(2, "parent waited status=%d", status);
    co_return 0;
}

asio::awaitable<int> exit_mode(asio::io_context& ctx, std::string endpoint, std::string how) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        say(1, "child ends how=%s", how.c_str());
        // No core file in anyone's directory (core_pattern may be "core").
        ::prctl(PR_SET_DUMPABLE, 0);
        if (how == "segv") ::raise(SIGSEGV);
        if (how == "abort") std::abort();
        end_child(std::atoi(how.c_str()));
    }
    int status = co_await r.wait();
    report_parent(r);
    say(1, "parent waited status=%d", status);
    co_return 0;
}

asio::awaitable<int> kill_mode(asio::io_context& ctx, std::string endpoint) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) block_in_child(r);
    report_parent(r);
    co_await r.kill(SIGTERM);
    int status = co_await r.wait();
    say(1, "parent waited status=%d", status);
    int again = co_await r.wait();
    say(1, "parent waited again status=%d", again);
    try {
        co_await r.kill(SIGTERM);
        say(1, "second kill succeeded");
    } catch (const std::system_error& e) {
        say(1, "second kill error category=%s value=%d message=%s", e.code().category().name(), e.code().value(),
            e.what());
    }
    co_return 0;
}

asio::awaitable<int> block_mode(asio::io_context& ctx, std::string endpoint) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) block_in_child(r);
    report_parent(r);
    int status = co_await r.wait();
    say(1, "parent waited status=%d", status);
    co_return 0;
}

asio::awaitable<int> late_wait_mode(asio::io_context& ctx, std::string endpoint, std::string dir) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        say(1, "child exits now");
        end_child(7);
    }
    report_parent(r);
    // The test says "go" once both agents have seen the child end.
    if (!wait_for_path(dir + "/go", 60s)) {
        say(2, "error no go file within 60 s");
        co_return 1;
    }
    int first = co_await r.wait();
    int second = co_await r.wait();
    say(1, "parent waited first=%d second=%d", first, second);
    co_return 0;
}

asio::awaitable<void> wait_into(rfork::fork_result r, int index, std::vector<int>* statuses, std::string dir) {
    try {
        int status = co_await r.wait();
        (*statuses)[static_cast<std::size_t>(index)] = status;
        say(1, "parent wait-done index=%d status=%d", index, status);
        // The next child (index - 1) may end now.
        auto path = dir + "/waited-" + std::to_string(index);
        if (FILE* f = std::fopen(path.c_str(), "w")) std::fclose(f);
    } catch (const std::system_error& e) {
        say(2, "error index=%d category=%s value=%d message=%s", index, e.code().category().name(),
            e.code().value(), e.what());
    }
}

asio::awaitable<int> many_mode(asio::io_context& ctx, std::string endpoint, int count, std::string dir,
                               std::vector<rfork::fork_result>* children, std::vector<int>* statuses) {
    for (int i = 0; i < count; ++i) {
        rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
        if (r.is_child()) {
            // The children end last first, each once its parent's wait for
            // the one after it has returned.
            if (i + 1 < count && !wait_for_path(dir + "/waited-" + std::to_string(i + 1), 60s)) {
                say(1, "child gave up index=%d", i);
                end_child(3);
            }
            end_child(10 + i);
        }
        say(1, "parent forked index=%d id=%s", i, r.child().id.c_str());
        children->push_back(r);
    }
    // All waits at once, the first child's (which ends last) first: waits
    // taken one after another would never see it end.
    statuses->assign(static_cast<std::size_t>(count), -1);
    for (int i = 0; i < count; ++i)
        asio::co_spawn(ctx, wait_into((*children)[static_cast<std::size_t>(i)], i, statuses, dir), asio::detached);
    co_return 0;
}

asio::awaitable<int> outlive_mode(asio::io_context& ctx, std::string endpoint, std::string dir) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        if (!wait_for_path(dir + "/go", 60s)) {
            say(1, "child gave up waiting for go");
            end_child(3);
        }
        say(1, "child late line");
        say(2, "child late stderr line");
        end_child(0);
    }
    report_parent(r);
    {
        auto temp = dir + "/parent-pid.tmp";
        FILE* f = std::fopen(temp.c_str(), "w");
        if (!f) {
            say(2, "error cannot write %s", temp.c_str());
            co_return 1;
        }
        std::fprintf(f, "%d\n", ::getpid());
        std::fclose(f);
        std::filesystem::rename(temp, dir + "/parent-pid");
    }
    say(1, "parent exits");
    co_return 0;
}

asio::awaitable<int> stdin_mode(asio::io_context& ctx, std::string endpoint, bool forward, std::chrono::seconds bound) {
    rfork::fork_options options;
    options.forward_stdin = forward;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, options);
    if (r.is_child()) {
        auto got = read_stdin(bound);
        say(1, "child stdin eof=%d bytes=%zu ms=%ld data=%s", got.eof ? 1 : 0, got.data.size(), got.ms,
            escaped(got.data).c_str());
        end_child(0);
    }
    report_parent(r);
    int status = co_await r.wait();
    if (!forward) {
        // What the child did not get is still here.
        auto got = read_stdin(10s);
        say(1, "parent stdin eof=%d bytes=%zu data=%s", got.eof ? 1 : 0, got.data.size(), escaped(got.data).c_str());
    }
    // Its agent shares the open file of its stdin, flags included, and must leave them as they were.
    say(1, "parent waited status=%d stdin_nonblocking=%d", status, (::fcntl(0, F_GETFL) & O_NONBLOCK) ? 1 : 0);
    co_return 0;
}

// A stdout open only for reading: the agent must not write the child's
// output into it. Both ends of one pipe are one stdio file to rfork, so the
// child's stderr comes back as its stdout.
asio::awaitable<int> readonly_stdout_mode(asio::io_context& ctx, std::string endpoint, std::string report) {
    int ends[2];
    if (::pipe(ends) != 0 || ::dup2(ends[0], 1) < 0 || ::dup2(ends[1], 2) < 0) co_return 1;
    ::close(ends[0]);
    ::close(ends[1]);
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    if (r.is_child()) {
        say(2, "child line");
        end_child(7);
    }
    // wait() returns once the child's output has been relayed: whatever the
    // agent wrote into the pipe is in it now.
    int status = co_await r.wait();
    ::fcntl(1, F_SETFL, O_NONBLOCK);
    char buffer[4096];
    auto n = ::read(1, buffer, sizeof buffer);
    std::string held(buffer, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    FILE* out = std::fopen(report.c_str(), "w");
    if (!out) co_return 1;
    std::fprintf(out, "parent forked id=%s\nparent waited status=%d\nparent stdout bytes=%zu data=%s\n",
                 r.child().id.c_str(), status, held.size(), escaped(held).c_str());
    std::fclose(out);
    co_return 0;
}

int usage() {
    std::fprintf(stderr, "usage: child_program MODE ENDPOINT [ARGS...] (see the source)\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return usage();
    std::string mode = argv[1], endpoint = argv[2];
    std::vector<std::string> args(argv + 3, argv + argc);
    asio::io_context ctx;
    std::vector<rfork::fork_result> children;
    std::vector<int> statuses;
    std::future<int> done;
    if (mode == "output" && args.size() == 2)
        done = asio::co_spawn(ctx, output_mode(ctx, endpoint, std::stoi(args[0]), std::stoi(args[1])), asio::use_future);
    else if (mode == "bulk" && args.size() == 2)
        done = asio::co_spawn(ctx, bulk_mode(ctx, endpoint, std::stoul(args[0]), std::stoull(args[1])), asio::use_future);
    else if (mode == "exit" && args.size() == 1)
        done = asio::co_spawn(ctx, exit_mode(ctx, endpoint, args[0]), asio::use_future);
    else if (mode == "kill" && args.empty())
        done = asio::co_spawn(ctx, kill_mode(ctx, endpoint), asio::use_future);
    else if (mode == "block" && args.empty())
        done = asio::co_spawn(ctx, block_mode(ctx, endpoint), asio::use_future);
    else if (mode == "late-wait" && args.size() == 1)
        done = asio::co_spawn(ctx, late_wait_mode(ctx, endpoint, args[0]), asio::use_future);
    else if (mode == "many" && args.size() == 2)
        done = asio::co_spawn(ctx, many_mode(ctx, endpoint, std::stoi(args[0]), args[1], &children, &statuses),
                              asio::use_future);
    else if (mode == "outlive" && args.size() == 1)
        done = asio::co_spawn(ctx, outlive_mode(ctx, endpoint, args[0]), asio::use_future);
    else if (mode == "stdin" && (args.size() == 1 || args.size() == 2) && (args[0] == "forward" || args[0] == "noforward"))
        done = asio::co_spawn(ctx, stdin_mode(ctx, endpoint, args[0] == "forward",
                                              std::chrono::seconds(args.size() == 2 ? std::stoi(args[1]) : 10)),
                              asio::use_future);
    else if (mode == "readonly-stdout" && args.size() == 1)
        done = asio::co_spawn(ctx, readonly_stdout_mode(ctx, endpoint, args[0]), asio::use_future);
    else
        return usage();
    try {
        ctx.run();  // until every coroutine, the detached waits of "many" too, has finished
        int code = done.get();
        for (std::size_t i = 0; i < statuses.size(); ++i)
            say(1, "parent waited index=%zu id=%s status=%d", i, children[i].child().id.c_str(), statuses[i]);
        return code;
    } catch (const std::system_error& e) {
        say(2, "error category=%s value=%d message=%s", e.code().category().name(), e.code().value(), e.what());
        return 1;
    } catch (const std::exception& e) {
        say(2, "error message=%s", e.what());
        return 1;
    }
}
