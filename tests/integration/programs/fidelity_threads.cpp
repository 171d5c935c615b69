// Four worker threads each count on their own counter and keep state of their
// own (a thread_local value and a heap buffer only they point to); the main
// thread forks. Before the fork the main thread reports what every worker
// holds; after it, each side asks every worker again (the worker answers from
// its own thread_local and heap) and watches all counters move on, a bounded
// number of checks. The child then stops and joins its workers and exits.
//
//   fidelity_threads HOST:PORT
//
// Lines: "before worker=I count=C secret=S sum=X tid=T", "before main_secret=S
// tasks=N", then per side "SIDE worker=I first=C last=C advanced=0|1
// answered=0|1 secret=S sum=X tid=T", "SIDE main_secret=S tasks=N checks=K",
// "SIDE joined" and, in the parent, "parent waited status=N".
#include "probe_util.hpp"
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

namespace {

constexpr int worker_count = 4;
constexpr std::uint64_t advance_by = 1000;  // a counter that moved this far kept running
constexpr auto check_bound = std::chrono::seconds(20);

struct worker_slot {
    std::atomic<std::uint64_t> count{0};
    std::atomic<int> asked{0};     // the generation of question the main thread asks
    std::atomic<int> answered{0};  // the last generation this worker answered
    std::uint64_t seed = 0;        // given by the main thread before the worker starts
    // The answer, written by the worker before it stores `answered`.
    std::uint64_t secret = 0, sum = 0;
    long tid = 0;
};

worker_slot slots[worker_count];
std::atomic<bool> stop{false};

thread_local std::uint64_t my_secret = 0;
thread_local std::vector<std::uint64_t>* my_buffer = nullptr;

void work(int i) {
    worker_slot& slot = slots[i];
    std::mt19937_64 random(slot.seed);
    my_secret = random();
    my_buffer = new std::vector<std::uint64_t>(1 << 14);
    for (auto& word : *my_buffer) word = random();
    int last = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        slot.count.fetch_add(1, std::memory_order_relaxed);
        int want = slot.asked.load(std::memory_order_acquire);
        if (want != last) {
            slot.secret = my_secret;
            slot.sum = probe::checksum(*my_buffer);
            slot.tid = static_cast<long>(::syscall(SYS_gettid));
            last = want;
            slot.answered.store(want, std::memory_order_release);
        }
        std::this_thread::yield();
    }
    delete my_buffer;
}

// Asks every worker to answer (generation `generation`); true when all did
// within the bound.
bool ask_all(int generation) {
    for (auto& slot : slots) slot.asked.store(generation, std::memory_order_release);
    auto deadline = std::chrono::steady_clock::now() + check_bound;
    for (auto& slot : slots)
        while (slot.answered.load(std::memory_order_acquire) != generation) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::yield();
        }
    return true;
}

std::size_t task_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
    return n;
}

thread_local std::uint64_t main_secret = 0;

// After the fork, on either side: every worker answers again, and every
// counter moves on by advance_by, within a bounded number of checks.
void report_after_fork(const char* side) {
    std::uint64_t first[worker_count];
    for (int i = 0; i < worker_count; ++i) first[i] = slots[i].count.load(std::memory_order_relaxed);
    bool answered = ask_all(2);
    auto deadline = std::chrono::steady_clock::now() + check_bound;
    std::uint64_t last[worker_count] = {};
    long checks = 0;
    for (bool all = false; !all && std::chrono::steady_clock::now() < deadline; ++checks) {
        std::this_thread::yield();
        all = true;
        for (int i = 0; i < worker_count; ++i) {
            last[i] = slots[i].count.load(std::memory_order_relaxed);
            if (last[i] < first[i] + advance_by) all = false;
        }
    }
    for (int i = 0; i < worker_count; ++i)
        std::printf("%s worker=%d first=%" PRIu64 " last=%" PRIu64 " advanced=%d answered=%d secret=%016" PRIx64
                    " sum=%016" PRIx64 " tid=%ld\n",
                    side, i, first[i], last[i], last[i] >= first[i] + advance_by ? 1 : 0,
                    answered && slots[i].answered.load() == 2 ? 1 : 0, slots[i].secret, slots[i].sum, slots[i].tid);
    std::printf("%s main_secret=%016" PRIx64 " tasks=%zu checks=%ld\n", side, main_secret, task_count(), checks);
    std::fflush(stdout);
}

void stop_and_join(std::vector<std::thread>& threads, const char* side) {
    stop.store(true);
    for (auto& t : threads) t.join();
    std::printf("%s joined\n", side);
    std::fflush(stdout);
}

asio::awaitable<int> run(asio::io_context& ctx, std::string endpoint) {
    std::random_device device;
    main_secret = (static_cast<std::uint64_t>(device()) << 32) | device();
    for (auto& slot : slots) slot.seed = (static_cast<std::uint64_t>(device()) << 32) | device();
    std::vector<std::thread> threads;
    for (int i = 0; i < worker_count; ++i) threads.emplace_back(work, i);
    if (!ask_all(1)) {
        std::printf("error: the workers did not answer before the fork\n");
        std::fflush(stdout);
        stop_and_join(threads, "before");
        co_return 1;
    }
    for (int i = 0; i < worker_count; ++i)
        std::printf("before worker=%d count=%" PRIu64 " secret=%016" PRIx64 " sum=%016" PRIx64 " tid=%ld\n", i,
                    slots[i].count.load(), slots[i].secret, slots[i].sum, slots[i].tid);
    std::printf("before main_secret=%016" PRIx64 " tasks=%zu\n", main_secret, task_count());
    std::fflush(stdout);

    std::error_code ec;
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint, ec);
    if (ec) {
        std::printf("error: fork failed: %s\n", r.error_message().c_str());
        std::fflush(stdout);
        stop_and_join(threads, "error");
        co_return 1;
    }
    const char* side = r.is_child() ? "child" : "parent";
    report_after_fork(side);
    stop_and_join(threads, side);
    if (r.is_parent()) {
        co_await probe::wait_and_report(r);
    }
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: fidelity_threads HOST:PORT\n");
        return 2;
    }
    return probe::run_main("fidelity_threads", [&](asio::io_context& ctx) { return run(ctx, argv[1]); });
}
