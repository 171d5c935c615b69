// rfork-agent under a service manager (rfork-agent.service is Type=notify):
// once it listens it says READY=1 on $NOTIFY_SOCKET, from its own pid as
// systemd requires, and SIGTERM then stops it cleanly.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

// The service manager's end: a datagram socket that learns each sender's pid.
struct notify_socket {
    fs::path dir = fs::temp_directory_path() / ("rfork-notify-" + std::to_string(::getpid()));
    fs::path path = dir / "notify";
    int fd = -1;

    notify_socket() {
        fs::create_directories(dir);
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        int on = 1;
        REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0);
    }
    ~notify_socket() {
        ::close(fd);
        fs::remove_all(dir);
    }

    struct message {
        std::string text;
        pid_t sender = 0;
    };
    // The next datagram, or an empty text when `bound` ran out.
    message receive(std::chrono::milliseconds bound) const {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(bound.count())) != 1) return {};
        char buffer[512];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
        iovec io{buffer, sizeof buffer};
        msghdr header{};
        header.msg_iov = &io;
        header.msg_iovlen = 1;
        header.msg_control = control;
        header.msg_controllen = sizeof control;
        auto n = ::recvmsg(fd, &header, 0);
        if (n < 0) return {};
        message m{std::string(buffer, static_cast<std::size_t>(n)), 0};
        for (auto* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred credentials{};
                std::memcpy(&credentials, CMSG_DATA(c), sizeof credentials);
                m.sender = credentials.pid;
            }
        return m;
    }
};

}  // namespace

TEST_SUITE("integration.service") {
    TEST_CASE("the agent tells the service manager it is ready from its own pid once it listens") {
        require_fork_environment();
        test_hosts hosts({"a"});
        notify_socket manager;
        auto local_socket = manager.dir / "agent.sock";
        // A second agent on host a, as systemd would start it.
        auto agent = hosts.start("a", {program_path("rfork-agent"), "--listen", "127.0.0.1:7001", "--socket",
                                       local_socket.string(), "--work-dir", (manager.dir / "work").string(),
                                       "--name", "service",
                                       // in this test's cgroup, where on v2 it cannot make children's
                                       "--allow-unlimited-children"},
                                 {{"NOTIFY_SOCKET", manager.path.string()}});
        auto ready = manager.receive(30s);
        INFO("agent log: " << hosts.agent_log("a"));
        REQUIRE(ready.text == "READY=1");
        // From the agent's main process itself, not a helper.
        REQUIRE(ready.sender > 0);
        CHECK(fs::read_symlink("/proc/" + std::to_string(ready.sender) + "/exe") ==
              fs::canonical(program_path("rfork-agent")));
        // Ready means listening: the local socket is there.
        struct stat st {};
        CHECK(::stat(local_socket.c_str(), &st) == 0);
        CHECK(S_ISSOCK(st.st_mode));

        REQUIRE(::kill(ready.sender, SIGTERM) == 0);
        auto ended = agent.finish(30s);
        CHECK(ended.status == 0);
        CHECK_FALSE(fs::exists(local_socket));
        // Nothing more was sent: one READY, no stray datagrams.
        CHECK(manager.receive(0ms).text.empty());
    }
}
