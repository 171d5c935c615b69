#include "receive/restored_child.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>

#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>

namespace rfork::agent {

asio::awaitable<std::string> read_status_line(std::shared_ptr<restored_child> child) {
    auto& buffer = child->status_buffer;
    auto [ec, n] = co_await asio::async_read_until(child->status, buffer, '\n', detail::as_tuple_awaitable);
    if (ec) co_return std::string{};
    std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(n) - 1);
    buffer.consume(n);
    co_return line;
}

void end_input(restored_child& child) {
    if (!child.input) return;
    if (child.input_is_terminal) {
        // A terminal has no end: its end-of-file character makes the child's read return 0.
        termios t{};
        unsigned char eof = ::tcgetattr(child.input->native_handle(), &t) == 0 ? t.c_cc[VEOF] : 4;
        [[maybe_unused]] auto n = ::write(child.input->native_handle(), &eof, 1);
    } else {
        std::error_code ignored;
        child.input->close(ignored);
    }
    child.input.reset();
}

void kill_child(restored_child& child) {
    // The namespace's init, through its pidfd (none once reaped, so no pid
    // reused meanwhile is hit): the whole pid namespace goes with it.
    if (child.init.pidfd) ::syscall(SYS_pidfd_send_signal, child.init.pidfd.get(), SIGKILL, nullptr, 0);
}

// The kernel unlinks an exiting task from its cgroup a moment after its
// parent has reaped it, so an attempt may find it busy still: a few more, bounded.
asio::awaitable<void> remove_cgroup(std::shared_ptr<restored_child> child) {
    if (!child->cgroup) co_return;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (int attempt = 0; child->cgroup->remove() == EBUSY && attempt < 100; ++attempt) {
        if (attempt == 0) child->cgroup->kill_all();
        pause.expires_after(std::chrono::milliseconds(10));
        co_await pause.async_wait(detail::as_tuple_awaitable);
    }
    child->cgroup.reset();  // logs it if it stayed
}

}  // namespace rfork::agent
