// Reads stdin to its end; prints the bytes read and the time from the first
// byte to the end, and the throughput.
#include <unistd.h>

#include <chrono>
#include <cstdio>

int main() {
    static char buffer[1 << 20];
    long long total = 0;
    std::chrono::steady_clock::time_point first{};
    for (;;) {
        auto n = ::read(0, buffer, sizeof buffer);
        if (n <= 0) break;
        if (total == 0) first = std::chrono::steady_clock::now();
        total += n;
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
    std::printf("bytes=%lld seconds=%.3f mib_per_s=%.1f\n", total, seconds, static_cast<double>(total) / 1048576.0 / seconds);
}
