// Waiting for a file event with a bound, without polling: inotify on a file or
// directory, the condition checked after every event. Shared by the test
// harness and the test programs.
#pragma once

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace rfork::test {

// Waits until `done()` is true, re-checking it whenever `watched` sees one of
// `events` (inotify IN_* flags); false when `bound` ran out first. The watch
// starts before the first check, so no event falls between check and wait.
template <typename Condition>
bool wait_for_event(const std::string& watched, unsigned events, Condition done, std::chrono::milliseconds bound) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    int fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    ::inotify_add_watch(fd, watched.c_str(), events);
    bool met = false;
    for (;;) {
        if (done()) {
            met = true;
            break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char buffer[4096];
        while (::read(fd, buffer, sizeof buffer) > 0) {
        }
    }
    ::close(fd);
    return met;
}

// Waits until `dir`/`name` exists.
inline bool wait_for_new_file(const std::string& dir, const std::string& name, std::chrono::milliseconds bound) {
    std::string path = dir + "/" + name;
    return wait_for_event(dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE,
                          [&] { return ::access(path.c_str(), F_OK) == 0; }, bound);
}

}  // namespace rfork::test
