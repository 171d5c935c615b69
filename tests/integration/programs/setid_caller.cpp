// The attack of a local user on its agent with a set-id program: it connects
// to the agent as itself, then runs SETID_PROGRAM (a set-uid copy of a program
// that waits) in the same process, keeping the connection. A child made
// beforehand, which holds the connection too, then asks for a fork of that
// process, now running as someone else, and prints the agent's answer:
//
//   setid_caller HOST:PORT SETID_PROGRAM [ARG...]
//   -> "refused: CODE TEXT" or "forked"
//
// The child kills the set-id program at the end (its real uid is still ours).
#include <rfork/protocol.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace protocol = rfork::protocol;

namespace {

// Sends `data` with our stdout and stderr attached, as a program's fork request goes.
bool send_with_stdio(int socket, const rfork::detail::bytes& data) {
    int fds[2] = {1, 2};
    char control[CMSG_SPACE(sizeof fds)] = {};
    iovec iov{const_cast<unsigned char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    auto* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    std::memcpy(CMSG_DATA(c), fds, sizeof fds);
    return ::sendmsg(socket, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// Reads the agent's answer: its handshake and one frame.
std::string read_answer(int socket) {
    rfork::detail::bytes in;
    unsigned char buffer[4096];
    for (ssize_t n; (n = ::read(socket, buffer, sizeof buffer)) > 0;) in.insert(in.end(), buffer, buffer + n);
    protocol::stream_decoder decoder(true);
    decoder.feed(in);
    for (;;) {
        switch (decoder.next()) {
        case protocol::stream_decoder::result::handshake: continue;
        case protocol::stream_decoder::result::frame: {
            auto frame = decoder.last_frame();
            protocol::error_message error;
            if (frame.type == protocol::message_type::error && !protocol::decode(frame.payload, error))
                return "refused: " + std::to_string(error.code.value()) + " " + error.text;
            return frame.type == protocol::message_type::fork_reply ? "forked" : "unexpected answer";
        }
        default: return "no answer";
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: setid_caller HOST:PORT SETID_PROGRAM [ARG...]\n");
        return 2;
    }
    const char* path = std::getenv("RFORK_AGENT_SOCKET");
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path ? path : "/run/rfork/agent.sock");
    int socket = ::socket(AF_UNIX, SOCK_STREAM, 0);  // inherited across exec: the set-id program holds it
    struct stat st {};
    if (socket < 0 || ::connect(socket, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::fstat(socket, &st) != 0) {
        std::perror("setid_caller: cannot connect to the agent");
        return 1;
    }
    // Closed by a successful exec: the child learns that the caller runs
    // the set-id program now.
    int exec_done[2];
    if (::pipe2(exec_done, O_CLOEXEC) != 0) return 1;
    pid_t caller = ::getpid();
    pid_t child = ::fork();
    if (child < 0) return 1;
    if (child > 0) {
        ::close(exec_done[0]);
        ::execv(argv[2], argv + 2);
        std::perror("setid_caller: exec");
        return 1;
    }
    ::close(exec_done[1]);
    char byte;
    if (::read(exec_done[0], &byte, 1) != 0) return 1;  // EOF: the exec happened

    protocol::fork_request request{argv[1], static_cast<std::uint64_t>(st.st_ino), 0};
    auto bytes = protocol::encode_with_handshake(protocol::role::program, request);
    std::string answer = send_with_stdio(socket, bytes) ? read_answer(socket) : "cannot send the request";
    std::printf("%s\n", answer.c_str());
    std::fflush(stdout);
    ::kill(caller, SIGKILL);
    return 0;
}
