// A pidfd for a process: a descriptor that names it for as long as it is
// held, even after its pid is reused (pidfd_open(2), Linux 5.3). Through the
// raw syscall, since glibc wraps it only from 2.36.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

namespace rfork::detail {

// The pidfd of `pid`, or -1 with errno set.
inline int open_pidfd(int pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Sends `signal` to the process the pidfd names (pidfd_send_signal(2)); 0, or -1 with errno set.
inline int signal_pidfd(int pidfd, int signal) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0));
}

}  // namespace rfork::detail
