// What /proc tells about a process, as the library and the agent both need it:
// whether it can be snapshotted by a local fork(), and what CRIU must be told.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace rfork::detail {

inline std::string proc_path(int pid, const char* what) {
    return "/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/" + what;
}

// The inodes of the sockets the process (0: this one) has open.
inline std::set<std::uint64_t> socket_inodes(int pid) {
    std::set<std::uint64_t> sockets;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(proc_path(pid, "fd"), ec)) {
        auto target = std::filesystem::read_symlink(entry.path(), ec).string();
        if (target.starts_with("socket:[")) sockets.insert(std::strtoull(target.c_str() + 8, nullptr, 10));
    }
    return sockets;
}

// Whether the process holds a TCP connection (not a listener): CRIU then
// needs --tcp-established, which works on the socket itself, shared or not.
inline bool has_tcp_connections(int pid) {
    auto sockets = socket_inodes(pid);
    // /proc/PID/net/tcp{,6}: "sl local remote st ... inode"; st 0A is LISTEN, 07 CLOSE.
    for (const char* table : {"net/tcp", "net/tcp6"}) {
        std::ifstream in(proc_path(pid, table));
        std::string line;
        std::getline(in, line);  // the header
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout;
            std::uint64_t inode = 0;
            fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
            if (state != "0A" && state != "07" && sockets.count(inode)) return true;
        }
    }
    return false;
}

// A "Name: numbers" field of a /proc file such as /proc/PID/status or
// /proc/self/fdinfo/FD; its last number when it has several (NSpid, NSsid:
// the last is the one in the process's own pid namespace).
inline long proc_field(const std::string& file, const std::string& name, long missing = -1) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with(name + ":")) continue;
        std::istringstream fields(line.substr(name.size() + 1));
        long value = missing;
        for (long v; fields >> v;) value = v;
        return value;
    }
    return missing;
}

// A field of /proc/PID/status (0: this process), e.g. "Threads" or "PPid".
inline long status_field(int pid, const std::string& name, long missing = -1) {
    return proc_field(proc_path(pid, "status"), name, missing);
}

}  // namespace rfork::detail
