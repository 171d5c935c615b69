#include "child.hpp"

#include "conversation.hpp"
#include "criu.hpp"
#include "log.hpp"
#include "process.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>

namespace rfork::agent {

using detail::as_tuple_awaitable;

namespace {

constexpr int status_fd_in_init = 3;

struct pipe_pair {
    unique_fd read, write;
};

pipe_pair make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

// A new pseudo-terminal: `write` is the child's end (the slave), `read` ours (the master).
pipe_pair make_terminal() {
    unique_fd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master || ::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0)
        throw std::system_error(errno, std::generic_category(), "posix_openpt");
    char name[64];
    if (::ptsname_r(master.get(), name, sizeof name) != 0)
        throw std::system_error(errno, std::generic_category(), "ptsname_r");
    unique_fd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) throw std::system_error(errno, std::generic_category(), "open pty slave");
    return {std::move(master), std::move(slave)};
}

// Forwards a stream of the child to the agent's stdout, each line marked.
// A terminal turns "\n" into "\r\n" (ONLCR, restored from the parent's settings): `terminal` drops the "\r".
asio::awaitable<void> forward_lines(asio::posix::stream_descriptor stream, std::string label, bool terminal) {
    std::string pending;
    char buffer[16384];
    for (;;) {
        auto [ec, n] = co_await stream.async_read_some(asio::buffer(buffer), as_tuple_awaitable);
        pending.append(buffer, n);
        std::string out;
        std::size_t start = 0;
        for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
            auto line = std::string_view(pending).substr(start, nl - start);
            if (terminal && line.ends_with('\r')) line.remove_suffix(1);
            out += fmt::format("[{}] {}\n", label, line);
        }
        pending.erase(0, start);
        if (ec && !pending.empty()) out += fmt::format("[{}] {}\n", label, pending);
        if (!out.empty()) {
            std::fwrite(out.data(), 1, out.size(), stdout);
            std::fflush(stdout);
        }
        if (ec) co_return;
    }
}

// Reads one status line from the namespace init.
asio::awaitable<std::string> read_status_line(asio::posix::stream_descriptor& status, asio::streambuf& buffer) {
    auto [ec, n] = co_await asio::async_read_until(status, buffer, '\n', as_tuple_awaitable);
    if (ec) co_return std::string{};
    std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(n) - 1);
    buffer.consume(n);
    co_return line;
}

struct supervised_child {
    supervised_child(asio::any_io_executor ex, std::string id_, std::string origin_, std::uint32_t pid_)
        : id(std::move(id_)), origin(std::move(origin_)), pid(pid_), status(ex) {}
    std::string id;
    std::string origin;
    std::uint32_t pid;
    child_process init;
    asio::posix::stream_descriptor status;
    asio::streambuf buffer;
};

// Runs until the child's namespace is gone.
asio::awaitable<void> supervise(std::shared_ptr<supervised_child> child) {
    auto started = std::chrono::steady_clock::now();
    std::string line = co_await read_status_line(child->status, child->buffer);
    int init_status = co_await wait_for_exit(child->init);
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (line.starts_with("exited ")) {
        int status = std::atoi(line.c_str() + 7);
        log("child {} (pid {} from {}) ended after {:.1f} s: {}", child->id, child->pid, child->origin, seconds,
            describe_wait_status(status));
    } else {
        log("child {} (pid {} from {}): its namespace ended abnormally ({})", child->id, child->pid, child->origin,
            describe_wait_status(init_status));
    }
}

}  // namespace

asio::awaitable<restore_outcome> restore_child(agent_state& agent, const protocol::image_begin& image,
                                               const std::string& id, job_dir& job) {
    auto ex = agent.io.get_executor();
    // The child's end of its connection to its agent: the fork's answer is waiting in it.
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        co_return restore_outcome{errc::internal_error, "socketpair failed", 0};
    unique_fd ours(pair[0]), childs(pair[1]);
    auto answer = handshake_and(protocol::fork_reply{protocol::fork_side::child, id, agent.host, image.pid});
    if (::write(ours.get(), answer.data(), answer.size()) != static_cast<ssize_t>(answer.size()))
        co_return restore_outcome{errc::internal_error, "could not prepare the child's answer", 0};
    ours.reset();  // the child reads its answer, then end of stream

    // New pipes take the place of the parent's stdio; files shared between fds stay shared.
    std::vector<fd_mapping> fds;
    std::vector<std::pair<int, std::string>> inherit;
    std::vector<unique_fd> keep_open;  // ends given to the init, closed here after the spawn
    struct output {
        unique_fd fd;
        std::string label;
        bool terminal;
    };
    std::vector<output> outputs;
    int next_fd = status_fd_in_init + 1;
    auto give = [&](unique_fd fd, const std::string& key) {
        fds.push_back({fd.get(), next_fd});
        inherit.emplace_back(next_fd++, key);
        keep_open.push_back(std::move(fd));
    };
    give(std::move(childs), fmt::format("socket:[{}]", image.socket_inode));
    std::map<std::string, int> seen;
    for (int fd = 2; fd >= 0; --fd) {  // outputs first, so a tty shared with stdin becomes an output
        const auto& key = image.stdio[static_cast<std::size_t>(fd)];
        if (key.empty() || seen.count(key)) continue;
        seen[key] = fd;
        // A terminal is replaced by a terminal (CRIU restores its settings), anything else by a pipe.
        bool terminal = key.starts_with("tty[");
        auto p = terminal ? make_terminal() : make_pipe();
        if (fd == 0) {
            give(std::move(p.read), key);  // stdin reads end of file
        } else {
            // "[ID] line" for stdout (or both, when they share a file), "[ID stderr] line" for stderr alone.
            bool shared = image.stdio[1] == image.stdio[2];
            give(std::move(p.write), key);
            outputs.push_back({std::move(p.read), fd == 2 && !shared ? id + " stderr" : id, terminal});
        }
    }

    auto status = make_pipe();
    fds.push_back({status.write.get(), status_fd_in_init});
    auto images = (job.path() / "images").string();
    auto log_file = job / "restore.log";
    auto pid_file = job / "restored.pid";
    std::vector<std::string> argv{agent.self_exe, "ns-init", std::to_string(status_fd_in_init), pid_file, "--"};
    for (auto& arg : restore_command(agent.criu, images, log_file, pid_file, inherit)) argv.push_back(arg);

    auto child = std::make_shared<supervised_child>(ex, id, image.origin_host, image.pid);
    child->init = spawn(argv, fds, CLONE_NEWPID | CLONE_NEWNS);
    status.write.reset();
    keep_open.clear();
    child->status.assign(status.read.release());

    std::string line = co_await read_status_line(child->status, child->buffer);
    if (!line.starts_with("restored ")) {
        co_await wait_for_exit(child->init);
        log("restore of child {} failed; CRIU said:", id);
        log_criu_failure(log_file);
        std::string why = line.starts_with("criu-failed ") ? criu_error_line(log_file)
                          : line.starts_with("failed ")    ? line.substr(7)
                                                           : "its namespace init ended without a word";
        job.remove();
        co_return restore_outcome{errc::restore_failed, "CRIU could not restore the process: " + why, 0};
    }
    job.remove();  // the images are in the child's memory now

    for (auto& o : outputs)
        asio::co_spawn(ex, forward_lines(asio::posix::stream_descriptor(ex, o.fd.release()), o.label, o.terminal),
                       asio::detached);
    asio::co_spawn(ex, supervise(child), asio::detached);
    co_return restore_outcome{{}, {}, static_cast<std::uint32_t>(std::atoi(line.c_str() + 9))};
}

}  // namespace rfork::agent
