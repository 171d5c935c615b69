#include "local/blocking_stream.hpp"

#include <rfork/detail/frame_io.hpp>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace rfork::agent {

// One job at a time: the I/O thread hands it over and waits for `finished`.
struct blocking_stream::state {
    std::mutex mutex;
    std::condition_variable wake;
    unique_fd fd;
    unique_fd done;         // an eventfd: the thread adds 1 once a job is done
    bool job = false;       // a job waits for the thread
    bool write = false;     // which one
    bool busy = false;      // the thread is in a call on fd: only it may close fd
    bool finished = false;  // a result waits for the I/O thread
    bool closing = false;
    std::vector<unsigned char> buffer;  // what to write, or where to read; the thread's while a job runs
    std::size_t result = 0;             // bytes read, or 1 once all was written
    std::optional<run_as> as;           // whom the thread acts as, if not root
};

namespace {

constexpr std::size_t read_chunk = 64 * 1024;

// Threads may be stuck in a call for ever (a FUSE file that never answers):
// they must not pile up, nor one user's take all the places.
class thread_budget {
public:
    bool take(std::uint32_t uid) {
        std::lock_guard lock(mutex_);
        if (total_ >= max_total || by_uid_[uid] >= max_per_user) return false;
        ++total_, ++by_uid_[uid];
        return true;
    }
    void give_back(std::uint32_t uid) {
        std::lock_guard lock(mutex_);
        --total_;
        if (--by_uid_[uid] == 0) by_uid_.erase(uid);
    }

private:
    static constexpr unsigned max_total = 4096, max_per_user = 256;
    std::mutex mutex_;
    unsigned total_ = 0;
    std::map<std::uint32_t, unsigned> by_uid_;
};

thread_budget& threads() {
    static thread_budget budget;  // never destroyed before a detached thread is done with it
    return budget;
}

// The user's groups and file-system ids for this thread alone, and no
// capability: raw system calls, as glibc's wrappers change every thread's.
// Its real and saved uids stay root's, so the user may not signal or trace
// this thread (and through it, the agent).
bool take_identity_in_this_thread(const run_as& as) {
    std::vector<gid_t> groups(as.groups.begin(), as.groups.end());
    if (as.uid == 0 || ::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) return false;
    ::syscall(SYS_setfsgid, as.gid);
    ::syscall(SYS_setfsuid, as.uid);
    // These report the id before the call: an invalid one (-1) asks what it is now.
    if (::syscall(SYS_setfsgid, -1) != static_cast<long>(as.gid) || ::syscall(SYS_setfsuid, -1) != static_cast<long>(as.uid))
        return false;
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3] = {};
    return ::syscall(SYS_capset, &header, none) == 0;
}

// The parent may have made its file description non-blocking.
void wait_until_ready(int fd, short events) {
    pollfd p{fd, events, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
}

std::size_t read_once(int fd, std::span<unsigned char> buffer) {
    for (;;) {
        auto n = ::read(fd, buffer.data(), buffer.size());
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EAGAIN || errno == EWOULDBLOCK) wait_until_ready(fd, POLLIN);
        else if (errno != EINTR) return 0;
    }
}

bool write_all_to(int fd, std::span<const unsigned char> data) {
    while (!data.empty()) {
        auto n = ::write(fd, data.data(), data.size());
        if (n > 0) data = data.subspan(static_cast<std::size_t>(n));
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) wait_until_ready(fd, POLLOUT);
        else if (n == 0 || errno != EINTR) return false;
    }
    return true;
}

void serve(std::shared_ptr<blocking_stream::state> s) {
    // Set before any job: only this thread reads `as` from now on.
    bool usable = !s->as || take_identity_in_this_thread(*s->as);
    std::unique_lock lock(s->mutex);
    for (;;) {
        s->wake.wait(lock, [&] { return s->job || s->closing; });
        if (s->closing) break;
        s->job = false;
        s->busy = true;
        int fd = s->fd.get();
        bool write = s->write;
        lock.unlock();
        std::size_t result = !usable ? 0 : write ? (write_all_to(fd, s->buffer) ? 1 : 0) : read_once(fd, s->buffer);
        lock.lock();
        s->busy = false;
        s->result = result;
        s->finished = true;
        ::eventfd_write(s->done.get(), 1);
    }
    // Closed while this thread was in a call: the fds are its to close.
    s->fd.reset();
    s->done.reset();
    lock.unlock();
    threads().give_back(s->as ? s->as->uid : 0);
}

}  // namespace

blocking_stream::blocking_stream(const asio::any_io_executor& ex, unique_fd fd, std::optional<run_as> as)
    : ex_(ex), state_(std::make_shared<state>()) {
    state_->fd = std::move(fd);
    state_->as = std::move(as);
}

blocking_stream::~blocking_stream() { close(); }

void blocking_stream::close() {
    if (closed_) return;
    closed_ = true;
    {
        std::lock_guard lock(state_->mutex);
        state_->closing = true;
        if (!state_->busy) {
            state_->fd.reset();
            state_->done.reset();
        }
    }
    state_->wake.notify_one();
    std::error_code ignored;
    if (done_) done_->close(ignored);
}

bool blocking_stream::start() {
    if (done_) return true;
    unique_fd done(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    unique_fd ours(done ? ::fcntl(done.get(), F_DUPFD_CLOEXEC, 0) : -1);
    if (!ours) return false;
    std::uint32_t uid = state_->as ? state_->as->uid : 0;
    if (!threads().take(uid)) return false;
    state_->done = std::move(done);
    // Signals are the I/O thread's to take.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    bool started = false;
    try {
        std::thread(serve, state_).detach();
        started = true;
    } catch (...) {  // std::system_error, or std::bad_alloc: the mask and the place come back all the same
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (!started) {
        threads().give_back(uid);
        return false;
    }
    done_.emplace(ex_, ours.release());
    return true;
}

asio::awaitable<std::optional<std::size_t>> blocking_stream::run(bool write) {
    if (closed_ || !state_->fd || !start()) co_return std::nullopt;
    {
        std::lock_guard lock(state_->mutex);
        state_->write = write;
        state_->job = true;
    }
    state_->wake.notify_one();
    for (;;) {
        std::optional<std::size_t> result;
        {
            std::lock_guard lock(state_->mutex);
            if (std::exchange(state_->finished, false)) result = state_->result;
        }
        if (result) co_return result;
        // An event between the check and this wait is not lost: the reactor
        // runs on this thread, only once the wait is registered.
        auto [ec] = co_await done_->async_wait(asio::posix::stream_descriptor::wait_read, detail::as_tuple_awaitable);
        if (ec || closed_) co_return std::nullopt;
        eventfd_t count;
        ::eventfd_read(done_->native_handle(), &count);
    }
}

asio::awaitable<std::size_t> blocking_stream::read_some(std::span<unsigned char> buffer) {
    if (closed_ || buffer.empty()) co_return 0;
    state_->buffer.resize(std::min(buffer.size(), read_chunk));
    auto n = co_await run(false);
    if (!n) co_return 0;
    std::copy_n(state_->buffer.begin(), *n, buffer.begin());
    co_return *n;
}

asio::awaitable<bool> blocking_stream::write_all(std::span<const unsigned char> data) {
    if (closed_) co_return false;
    if (data.empty()) co_return true;
    state_->buffer.assign(data.begin(), data.end());
    auto done = co_await run(true);
    co_return done == 1u;
}

}  // namespace rfork::agent
