// The process scripts/bench forks: MIB of touched, incompressible memory, and
// a 1 ms heartbeat on its event loop, whose longest gap is how long the
// process could not run. Every line it prints is "key=value" fields; clocks
// are the wall clock in ns (the test hosts share it), durations in ms.
//
//   fork_bench rfork HOST:PORT MIB [threads]
//       fork_remote; "threads" adds a second thread, so the caller itself is
//       checkpointed (the path of multi-threaded programs).
//       parent: "parent id= call_ns= return_ns= frozen_ms= sum= child_pid= status="
//       child:  "child child_ns= sum="
//   fork_bench local MIB
//       a local fork(), the baseline; prints the same two lines.
//   fork_bench rate HOST:PORT MIB N
//       N fork_remote calls one after another, none waiting for the child
//       before the next; each child exits at once, with 0 if its memory's
//       checksum is the parent's and 3 if not. Then every child is waited for.
//       prints "rate forks= first_call_ns= last_return_ns= matched=" (matched:
//       children that exited with 0).
//   fork_bench together HOST:PORT MIB FIFO
//       for N such programs started at once: prints "ready", then opens FIFO
//       for reading, which returns (for all of them at once) when the caller
//       opens it for writing, and then forks as "rfork" does, without the
//       heartbeat. The same two lines as "rfork", "parent" without frozen_ms.
//   fork_bench idle MIB
//       waits to be dumped by plain CRIU: prints "ready sum=", then beats until
//       SIGTERM and prints "original frozen_ms=" (the longest gap). A restored
//       copy notices its new pid namespace, prints "child child_ns= sum=" and ends.
#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

long long wall_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<std::uint64_t> touched_memory(std::size_t mib) {
    std::vector<std::uint64_t> memory(mib * (std::size_t{1} << 20) / 8);
    std::uint64_t x = 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(wall_ns());
    for (auto& word : memory) {  // xorshift: no zero pages, nothing for zip to squeeze
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        word = x;
    }
    return memory;
}

std::uint64_t checksum(const std::vector<std::uint64_t>& memory) {
    std::uint64_t h = 1469598103934665603ull;
    for (auto word : memory) h = (h ^ word) * 1099511628211ull;
    return h;
}

// Beats every millisecond on the event loop and keeps the longest gap.
class heartbeat {
public:
    explicit heartbeat(asio::io_context& ctx) : timer_(ctx) {}

    void start() {
        last_ = std::chrono::steady_clock::now();
        arm();
    }
    // A beat already due when this is called still runs: the flag ends it.
    void stop() {
        stopped_ = true;
        timer_.cancel();
    }
    double longest_gap_ms() const { return std::chrono::duration<double, std::milli>(longest_).count(); }
    std::function<void()> on_beat;

private:
    void arm() {
        timer_.expires_after(std::chrono::milliseconds(1));
        timer_.async_wait([this](std::error_code ec) {
            if (ec || stopped_) return;
            auto now = std::chrono::steady_clock::now();
            longest_ = std::max(longest_, now - last_);
            last_ = now;
            if (on_beat) on_beat();
            arm();
        });
    }

    asio::steady_timer timer_;
    std::chrono::steady_clock::time_point last_;
    std::chrono::steady_clock::duration longest_{};
    bool stopped_ = false;
};

// Some beats before and after what is measured, so the gap is the loop's.
asio::awaitable<void> beats(asio::io_context& ctx, int n) {
    asio::steady_timer t(ctx, std::chrono::milliseconds(n));
    co_await t.async_wait(asio::use_awaitable);
}

// A thread that waits until it is destroyed (also when a fork throws).
class parked_thread {
public:
    parked_thread()
        : thread_([this] {
              std::unique_lock lock(m_);
              cv_.wait(lock, [this] { return quit_; });
          }) {}
    ~parked_thread() {
        {
            std::lock_guard lock(m_);
            quit_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool quit_ = false;
    std::thread thread_;
};

asio::awaitable<int> remote(asio::io_context& ctx, std::string endpoint, std::size_t mib, bool threads) {
    auto memory = touched_memory(mib);
    auto sum = checksum(memory);
    // A second thread, parked: the process is multi-threaded for the fork.
    std::optional<parked_thread> parked;
    if (threads) parked.emplace();

    heartbeat beat(ctx);
    beat.start();
    co_await beats(ctx, 20);
    long long call = wall_ns();
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    long long back = wall_ns();
    if (r.is_child()) {
        std::printf("child child_ns=%lld sum=%016" PRIx64 "\n", back, checksum(memory));
        std::fflush(stdout);
        std::_Exit(0);  // the parked thread ends with the process
    }
    co_await beats(ctx, 20);
    beat.stop();
    int status = co_await r.wait();
    std::printf("parent id=%s call_ns=%lld return_ns=%lld frozen_ms=%.3f sum=%016" PRIx64 " child_pid=%d status=%d\n",
                r.child().id.c_str(), call, back, beat.longest_gap_ms(), sum, r.child().pid, status);
    std::fflush(stdout);
    co_return 0;
}

asio::awaitable<int> rate(asio::io_context& ctx, std::string endpoint, std::size_t mib, int n) {
    auto memory = touched_memory(mib);
    auto sum = checksum(memory);
    std::vector<rfork::fork_result> children;
    long long first_call = wall_ns();
    for (int i = 0; i < n; ++i) {
        rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
        if (r.is_child()) std::_Exit(checksum(memory) == sum ? 0 : 3);
        children.push_back(std::move(r));
    }
    long long last_return = wall_ns();
    int matched = 0;
    for (auto& child : children)
        if (co_await child.wait() == 0) ++matched;
    std::printf("rate forks=%d first_call_ns=%lld last_return_ns=%lld matched=%d\n", n, first_call, last_return,
                matched);
    std::fflush(stdout);
    co_return matched == n ? 0 : 1;
}

// Returns once the caller has opened FIFO for writing: the start barrier of
// programs that fork at the same moment. The fd is closed before the fork,
// which would otherwise have to take it along.
void pass_barrier(const std::string& fifo) {
    int fd = ::open(fifo.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + fifo);
    ::close(fd);
}

asio::awaitable<int> together(asio::io_context& ctx, std::string endpoint, std::size_t mib, std::string fifo) {
    auto memory = touched_memory(mib);
    auto sum = checksum(memory);
    std::printf("ready\n");
    std::fflush(stdout);
    pass_barrier(fifo);
    long long call = wall_ns();
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    long long back = wall_ns();
    if (r.is_child()) {
        std::printf("child child_ns=%lld sum=%016" PRIx64 "\n", back, checksum(memory));
        std::fflush(stdout);
        std::_Exit(0);
    }
    int status = co_await r.wait();
    std::printf("parent id=%s call_ns=%lld return_ns=%lld sum=%016" PRIx64 " child_pid=%d status=%d\n",
                r.child().id.c_str(), call, back, sum, r.child().pid, status);
    std::fflush(stdout);
    co_return 0;
}

asio::awaitable<int> local(asio::io_context& ctx, std::size_t mib) {
    auto memory = touched_memory(mib);
    auto sum = checksum(memory);
    heartbeat beat(ctx);
    beat.start();
    co_await beats(ctx, 20);
    long long call = wall_ns();
    pid_t child = ::fork();
    long long back = wall_ns();
    if (child == 0) {
        std::printf("child child_ns=%lld sum=%016" PRIx64 "\n", back, checksum(memory));
        std::fflush(stdout);
        std::_Exit(0);
    }
    co_await beats(ctx, 20);
    beat.stop();
    int status = 0;
    ::waitpid(child, &status, 0);
    std::printf("parent call_ns=%lld return_ns=%lld frozen_ms=%.3f sum=%016" PRIx64 " child_pid=%d status=%d\n", call,
                back, beat.longest_gap_ms(), sum, child, WEXITSTATUS(status));
    std::fflush(stdout);
    co_return 0;
}

asio::awaitable<int> idle(asio::io_context& ctx, std::size_t mib) {
    auto memory = touched_memory(mib);
    std::printf("ready sum=%016" PRIx64 "\n", checksum(memory));
    std::fflush(stdout);
    auto pid_namespace = [] { return std::filesystem::read_symlink("/proc/self/ns/pid").string(); };
    auto mine = pid_namespace();
    heartbeat beat(ctx);
    beat.on_beat = [&] {
        if (pid_namespace() == mine) return;
        // The clock first: the order in which arguments are evaluated is
        // unspecified, and the checksum of a large memory takes long here.
        long long now = wall_ns();
        std::printf("child child_ns=%lld sum=%016" PRIx64 "\n", now, checksum(memory));
        std::fflush(stdout);
        std::_Exit(0);
    };
    asio::signal_set term(ctx, SIGTERM);
    beat.start();
    co_await term.async_wait(asio::use_awaitable);
    beat.stop();
    std::printf("original frozen_ms=%.3f\n", beat.longest_gap_ms());
    std::fflush(stdout);
    co_return 0;
}

int usage() {
    std::fprintf(stderr, "usage: fork_bench rfork HOST:PORT MIB [threads] | rate HOST:PORT MIB N |\n"
                         "                  together HOST:PORT MIB FIFO | local MIB | idle MIB\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    asio::io_context ctx;
    asio::awaitable<int> body;
    if (args.size() >= 3 && args.size() <= 4 && args[0] == "rfork" && (args.size() == 3 || args[3] == "threads"))
        body = remote(ctx, args[1], std::stoul(args[2]), args.size() == 4);
    else if (args.size() == 4 && args[0] == "rate")
        body = rate(ctx, args[1], std::stoul(args[2]), std::stoi(args[3]));
    else if (args.size() == 4 && args[0] == "together")
        body = together(ctx, args[1], std::stoul(args[2]), args[3]);
    else if (args.size() == 2 && args[0] == "local")
        body = local(ctx, std::stoul(args[1]));
    else if (args.size() == 2 && args[0] == "idle")
        body = idle(ctx, std::stoul(args[1]));
    else
        return usage();
    auto done = asio::co_spawn(ctx, std::move(body), asio::use_future);
    ctx.run();
    try {
        return done.get();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fork_bench: %s\n", e.what());
        return 1;
    }
}
