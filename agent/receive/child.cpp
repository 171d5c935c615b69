#include "receive/child.hpp"

#include "receive/child_cgroup.hpp"
#include "peer/conversation.hpp"
#include "criu/criu.hpp"
#include "criu/criu_workspace.hpp"
#include "common/log.hpp"
#include "receive/ns_init.hpp"
#include "peer/page_relay.hpp"
#include "common/process.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/streambuf.hpp>
#include <asio/this_coro.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>

namespace rfork::agent {

using detail::as_tuple_awaitable;
using asio::posix::stream_descriptor;

namespace {

constexpr int status_fd_in_init = 3;
constexpr std::size_t output_chunk = 64 * 1024;

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

// Reads one status line from the namespace init; empty at its end.
asio::awaitable<std::string> read_status_line(stream_descriptor& status, asio::streambuf& buffer) {
    auto [ec, n] = co_await asio::async_read_until(status, buffer, '\n', as_tuple_awaitable);
    if (ec) co_return std::string{};
    std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(n) - 1);
    buffer.consume(n);
    co_return line;
}

}  // namespace

struct restored_child {
    explicit restored_child(const asio::any_io_executor& ex) : status(ex) {}

    struct output {
        std::shared_ptr<stream_descriptor> stream;
        protocol::output_stream which;
        bool terminal;  // a pty master: its end reads as EIO
    };

    std::shared_ptr<hosted_child> record;
    child_process init;
    stream_descriptor status;  // lines from the namespace init
    asio::streambuf status_buffer;
    std::vector<output> outputs;
    std::shared_ptr<stream_descriptor> input;  // the child's stdin: a pipe, or a pty master
    bool input_is_terminal = false;
    std::shared_ptr<page_relay> pages;  // with lazy pages: to `criu lazy-pages`
    pid_t lazy_daemon = -1;             // and that daemon
    bool running = false;               // restored: the init's child is the child, no longer CRIU
    std::optional<child_cgroup> cgroup; // every process of the child, from its init on
    child_slot slot;                    // its place among --max-children
};

void log_image_complete(const std::string& id, std::uint64_t bytes) {
    auto clock_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now().time_since_epoch()).count();
    log("image for child {} complete: {} bytes (clock_ns={})", id, bytes, clock_ns);
}

namespace {

// The child's stdout or stderr, to its parent's agent, or, once that is gone,
// to our stdout line by line.
asio::awaitable<void> pump_output(std::shared_ptr<restored_child> child, restored_child::output out,
                                  std::shared_ptr<peer_connection> peer) {
    protocol::child_output message;
    message.stream = out.which;
    std::vector<unsigned char> buffer(output_chunk);
    std::string pending;  // an unfinished line, when logging locally
    std::string label = child->record->id + (out.which == protocol::output_stream::stderr_stream ? " stderr" : "");
    for (;;) {
        auto [ec, n] = co_await out.stream->async_read_some(asio::buffer(buffer), as_tuple_awaitable);
        message.data.assign(buffer.begin(), buffer.begin() + static_cast<long>(n));
        if (n > 0) {
            auto frame = protocol::encode(message);
            if (!co_await peer->send(frame)) {
                pending.append(message.data.begin(), message.data.end());
                std::size_t start = 0;
                for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
                    auto line = std::string_view(pending).substr(start, nl - start);
                    if (out.terminal && line.ends_with('\r')) line.remove_suffix(1);
                    fmt::print("[{}] {}\n", label, line);
                }
                pending.erase(0, start);
                std::fflush(stdout);
            }
        }
        if (ec) break;  // end of file, or EIO from a pty master whose slave is closed
    }
    if (!pending.empty()) fmt::print("[{}] {}\n", label, pending), std::fflush(stdout);
}

// The cgroup of a child whose pid namespace has ended. The kernel unlinks
// an exiting task from its cgroup a moment after its parent has reaped it,
// so an attempt may find it busy still: a few more, bounded.
asio::awaitable<void> remove_cgroup(std::shared_ptr<restored_child> child) {
    if (!child->cgroup) co_return;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (int attempt = 0; child->cgroup->remove() == EBUSY && attempt < 100; ++attempt) {
        if (attempt == 0) child->cgroup->kill_all();
        pause.expires_after(std::chrono::milliseconds(10));
        co_await pause.async_wait(as_tuple_awaitable);
    }
    child->cgroup.reset();  // logs it if it stayed
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

// Input, signals and lazy pages from the parent's agent, until it goes away.
asio::awaitable<void> take_requests(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer) {
    detail::received_frame frame;
    while (!co_await detail::read_frame(*peer, frame)) {
        if (child->pages && page_relay::carries(frame.type)) {
            if (!co_await child->pages->take(frame)) {
                log("child {}: its memory is larger than this agent accepts (--max-image-size); killed",
                    child->record->id);
                kill_child(*child);
            }
        } else if (frame.type == protocol::message_type::child_input && child->input) {
            co_await asio::async_write(*child->input, asio::buffer(frame.payload), as_tuple_awaitable);
        } else if (frame.type == protocol::message_type::child_input_end) {
            end_input(*child);
        } else if (frame.type == protocol::message_type::signal_child && child->running && child->init.pidfd) {
            // Through pidfds checked to be this child's: no reused pid is hit.
            protocol::signal_child s;
            if (!protocol::decode(frame.payload, s)) {
                log("child {}: signal {} from its parent", child->record->id, s.signal);
                signal_restored_process(child->record->init_pid, child->record->pid, static_cast<int>(s.signal));
            }
        } else {
            break;
        }
    }
    end_input(*child);  // nobody can send more
    if (child->pages) child->pages->close();  // no more pages can come: the lazy-pages daemon gives up
}

// Ends with `criu lazy-pages`: once it has all the child's pages, the image
// is complete here; if it fails, the child would find holes in its memory,
// so it must not run on.
// `job` goes when this ends: the daemon reads its images until then.
asio::awaitable<void> finish_lazy_pages(std::shared_ptr<restored_child> child, child_process daemon,
                                        [[maybe_unused]] job_dir job, std::shared_ptr<criu_workspace> workspace,
                                        std::uint64_t file_bytes, std::chrono::seconds image_timeout) {
    // A sender that trickles pages just within the idle timeout would keep the
    // daemon and the images here for as long as it likes: the memory has the
    // image's bound too, counted from the restore.
    auto status = co_await wait_for_exit(daemon, image_timeout);
    auto& id = child->record->id;
    child->record->memory_here->set();
    if (!status) {
        log("child {}: its memory did not arrive whole within {} s (--image-timeout); killed", id,
            image_timeout.count());
        kill_child(*child);
        co_return;
    }
    if (*status == 0) {
        log_image_complete(id, file_bytes + child->pages->bytes_in());
        co_return;
    }
    log_criu_failure(fmt::format("child {}: fetching its memory failed ({}); killed", id, describe_wait_status(*status)),
                     workspace->work_fd(), lazy_pages_log);
    kill_child(*child);
}

}  // namespace

asio::awaitable<void> serve_child(agent_state& agent, std::shared_ptr<restored_child> child,
                                  std::shared_ptr<peer_connection> peer) {
    using namespace asio::experimental::awaitable_operators;
    auto ex = agent.io.get_executor();
    if (!child->pages) asio::co_spawn(ex, take_requests(child, peer), asio::detached);  // else running already

    // The exit status goes last, after every byte of output. (Each awaitable is
    // named before it is awaited: see the GCC 12 note in frame_io.hpp.)
    std::string line;
    auto wait_for_end = [](std::shared_ptr<restored_child> c, std::string& out) -> asio::awaitable<void> {
        out = co_await read_status_line(c->status, c->status_buffer);
    };
    auto ended = wait_for_end(child, line);
    if (child->outputs.size() == 2) {  // stdout, and stderr when it is a file of its own
        auto out = pump_output(child, child->outputs[0], peer);
        auto err = pump_output(child, child->outputs[1], peer);
        auto all = std::move(ended) && std::move(out) && std::move(err);
        co_await std::move(all);
    } else if (child->outputs.size() == 1) {
        auto out = pump_output(child, child->outputs[0], peer);
        auto all = std::move(ended) && std::move(out);
        co_await std::move(all);
    } else {
        co_await std::move(ended);
    }
    int init_status = co_await wait_for_exit(child->init);
    agent.hosted.remove(child->record->id);  // nothing to list, signal or fork from any more
    // Nothing of the fork stays once its parent learns the end: with lazy
    // pages, CRIU's daemon ends with the child (bounded, should it not).
    if (auto memory = child->record->memory_here; memory && !memory->happened()) {
        asio::steady_timer bound(ex, agent.opts.limits.idle_timeout);
        auto waited = memory->wait() || bound.async_wait(asio::use_awaitable);
        co_await std::move(waited);
        if (!memory->happened()) {
            log("child {}: the lazy-pages daemon outlived it; killed", child->record->id);
            ::kill(child->lazy_daemon, SIGKILL);
            co_await memory->wait();
        }
    }
    // Its cgroup and its place among --max-children go before its parent learns the end.
    co_await remove_cgroup(child);
    child->slot.release();

    auto& record = *child->record;
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - record.started).count();
    int status = line.starts_with("exited ") ? shell_status(std::atoi(line.c_str() + 7)) : 128 + SIGKILL;
    if (line.starts_with("exited "))
        log("child {} (pid {} from {}) ended after {:.1f} s: {}", record.id, record.pid, record.origin, seconds,
            describe_wait_status(std::atoi(line.c_str() + 7)));
    else
        log("child {} (pid {} from {}): its namespace ended abnormally ({})", record.id, record.pid, record.origin,
            describe_wait_status(init_status));
    protocol::child_exit exit{static_cast<std::uint32_t>(status)};
    auto frame = protocol::encode(exit);
    co_await peer->send(frame);
    peer->close();
}

asio::awaitable<restore_outcome> restore_child(agent_state& agent, const protocol::image_begin& image,
                                               const std::string& id, job_dir& job,
                                               std::shared_ptr<peer_connection> peer, std::optional<run_as> as,
                                               child_slot slot, std::vector<unsigned char> placements) {
    auto ex = agent.io.get_executor();
    if (as && (image.flags & protocol::image_begin::lazy_pages))
        co_return restore_outcome{errc::restore_failed,
                                  fmt::format("uid {}'s process came with lazy pages, which CRIU restores only as "
                                              "root; its agent must send it whole",
                                              as->uid),
                                  0, nullptr};
    // CRIU restores no cgroup here (--manage-cgroups=ignore), yet the sets an
    // image names (a root child's: a user's image has none) make it start a
    // helper in the child's pid namespace, where that helper can take a pid
    // the image needs: a chain's, whose pids are small.
    std::error_code no_sets;
    std::filesystem::remove(job.path() / "images" / "cgroup.img", no_sets);
    unique_fd criu(::open(agent.criu.c_str(), O_PATH | O_CLOEXEC));  // for ns-init, see ns_init.hpp
    if (!criu)
        co_return restore_outcome{errc::internal_error,
                                  fmt::format("cannot open CRIU at {}: {}", agent.criu, std::strerror(errno)), 0,
                                  nullptr};
    // The child's end of its connection to its agent: the fork's answer is waiting in it.
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        co_return restore_outcome{errc::internal_error, "socketpair failed", 0, nullptr};
    unique_fd ours(pair[0]), childs(pair[1]);
    auto answer = handshake_and(protocol::fork_reply{protocol::fork_side::child, id, agent.host, image.pid});
    if (::write(ours.get(), answer.data(), answer.size()) != static_cast<ssize_t>(answer.size()))
        co_return restore_outcome{errc::internal_error, "could not prepare the child's answer", 0, nullptr};
    ours.reset();  // the child reads its answer, then end of stream

    auto child = std::make_shared<restored_child>(ex);
    child->slot = std::move(slot);
    // Made before anything of the child runs; it goes with `child` on any failure.
    if (agent.cgroups) {
        try {
            child->cgroup.emplace(*agent.cgroups, id,
                                  child_limits{agent.opts.limits.child_max_pids, agent.opts.limits.child_max_memory});
        } catch (const std::exception& e) {
            co_return restore_outcome{errc::internal_error, fmt::format("cannot make the child's cgroup: {}", e.what()),
                                      0, nullptr};
        }
    }

    // New pipes take the place of the parent's stdio; files shared between fds stay shared.
    std::vector<fd_mapping> fds;
    std::vector<std::pair<int, std::string>> inherit;
    std::vector<unique_fd> keep_open;  // ends given to the init, closed here after the spawn
    int next_fd = status_fd_in_init + 1;
    auto give = [&](unique_fd fd, const std::string& key) {
        // CRIU reopens a pipe or terminal through /proc/self/fd: as the
        // child's user, it must be that user's, as a login's terminal is.
        if (as && ::fchown(fd.get(), as->uid, static_cast<gid_t>(-1)) != 0)
            throw std::system_error(errno, std::generic_category(), "chown of the child's stdio");
        fds.push_back({fd.get(), next_fd});
        inherit.emplace_back(next_fd++, key);
        keep_open.push_back(std::move(fd));
    };
    give(std::move(childs), fmt::format("socket:[{}]", image.socket_inode));
    std::map<std::string, pipe_pair*> made;
    std::vector<pipe_pair> ends(3);
    for (int fd = 0; fd < 3; ++fd) {
        const auto& key = image.stdio[static_cast<std::size_t>(fd)];
        if (key.empty() || made.count(key)) continue;
        // A terminal is replaced by a terminal (CRIU restores its settings), anything else by a pipe.
        bool terminal = key.starts_with("tty[");
        auto& p = ends[static_cast<std::size_t>(fd)];
        p = terminal ? make_terminal() : make_pipe();
        made[key] = &p;
        // A pipe's ends differ: stdin's read end and an output's write end go to the child.
        bool child_reads = fd == 0 && !terminal;
        auto child_end = child_reads ? std::move(p.read) : std::move(p.write);
        auto our_end = child_reads ? std::move(p.write) : std::move(p.read);
        give(std::move(child_end), key);
        auto stream = std::make_shared<stream_descriptor>(ex, our_end.release());
        bool is_stdin = image.stdio[0] == key;
        bool is_output = image.stdio[1] == key || image.stdio[2] == key;
        if (is_stdin) {
            child->input = stream;
            child->input_is_terminal = terminal;
        }
        if (is_output) {
            auto which = image.stdio[1] == key ? protocol::output_stream::stdout_stream
                                               : protocol::output_stream::stderr_stream;
            child->outputs.push_back({stream, which, terminal});
        }
    }

    auto status = make_pipe();
    bool lazy = image.flags & protocol::image_begin::lazy_pages;
    // A child that is not root's is restored by CRIU running as its user
    // (run_as.hpp): the kernel holds it to what that user may do.
    if (as) as->capabilities = criu_restore_capabilities;
    auto workspace = std::make_shared<criu_workspace>(job, as, criu_workspace::images_access::read);
    child_process lazy_daemon;
    if (lazy) {
        // The daemon first: the restore hands it the child's userfaultfd.
        auto command = lazy_pages_command(agent.criu, criu_page_socket_fd, criu_ready_fd);
        auto limit = agent.opts.limits.max_image_size;  // for the memory: what the files left of it
        child->pages = co_await start_page_criu(ex, command, workspace->mappings(), std::nullopt, lazy_daemon, -1,
                                                limit > image.total_size ? limit - image.total_size : 0);
        child->lazy_daemon = lazy_daemon.pid;
        if (!child->pages) {
            co_await wait_for_exit(lazy_daemon);
            auto why = log_criu_failure(fmt::format("the lazy-pages daemon for child {} failed", id),
                                        workspace->work_fd(), lazy_pages_log);
            co_return restore_outcome{errc::restore_failed, "CRIU could not serve lazy pages: " + why, 0, nullptr};
        }
        // Pages flow both ways from now on: CRIU's restore itself touches some.
        asio::co_spawn(ex, take_requests(child, peer), asio::detached);
        asio::co_spawn(ex, page_relay::pump_out(child->pages, peer), asio::detached);
    }

    fds.push_back({status.write.get(), status_fd_in_init});
    for (auto& mapping : workspace->mappings()) fds.push_back(mapping);
    fds.push_back({criu.get(), ns_init_criu_fd});
    // Where the child's files go (file_placement.hpp), for its namespace init to read.
    unique_fd plan;
    if (!placements.empty()) {
        plan.reset(::memfd_create("rfork-placements", MFD_CLOEXEC));
        if (!plan || ::write(plan.get(), placements.data(), placements.size()) !=
                         static_cast<ssize_t>(placements.size()) || ::lseek(plan.get(), 0, SEEK_SET) != 0)
            co_return restore_outcome{errc::internal_error, "cannot hand the child's files to its namespace", 0,
                                      nullptr};
        fds.push_back({plan.get(), ns_init_plan_fd});
    }
    // /proc/self/exe: this very agent's binary, even once a package upgrade
    // has put another at agent.self_exe (the child execs before it changes).
    std::vector<std::string> argv{"/proc/self/exe", "ns-init", std::to_string(status_fd_in_init),
                                  as ? to_argument(*as) : "root",
                                  plan ? std::to_string(ns_init_plan_fd) : "-", "--"};
    for (auto& arg : restore_command(agent.criu, inherit, lazy, as.has_value())) argv.push_back(arg);

    // Past here lazy pages may be flowing: a failure must stop them too.
    auto end_lazy_pages = [&]() -> asio::awaitable<void> {
        if (!lazy) co_return;
        child->pages->close();
        ::kill(lazy_daemon.pid, SIGKILL);
        co_await wait_for_exit(lazy_daemon);
    };
    std::string spawn_failure;
    try {
        child->init = spawn(argv, fds, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC, nullptr, -1,
                            child->cgroup ? child->cgroup->procs_fds() : std::vector<int>{});
        if (child->cgroup) child->cgroup->close_procs();  // joined: no one else may be moved in by them
    } catch (const std::exception& e) {
        spawn_failure = e.what();
    }
    if (!spawn_failure.empty()) {
        auto ended = end_lazy_pages();
        co_await std::move(ended);
        child->cgroup.reset();
        child->slot.release();
        job.remove();
        co_return restore_outcome{errc::internal_error, "cannot start the restore: " + spawn_failure, 0,
                                  lazy ? child : nullptr};
    }
    status.write.reset();
    keep_open.clear();
    child->status.assign(status.read.release());
    // Known from now on: CRIU resumes the child before it tells us, and the
    // child may fork again at once (a chain), from inside this namespace.
    auto record = std::make_shared<hosted_child>();
    record->id = id;
    record->origin = image.origin_host;
    record->pid = image.pid;
    record->init_pid = child->init.pid;
    if (lazy) record->memory_here = std::make_shared<one_shot_event>(ex);
    child->record = record;
    agent.hosted.add(record);

    // CRIU, running as the child's user, can be stopped by that user: the
    // restore has a bound, and its whole namespace goes when it passes.
    auto bound = criu_time_bound(agent.opts.limits.idle_timeout, image.total_size);
    std::string line;
    {
        deadline limit(ex, child->init.pidfd.get(), bound);
        line = co_await read_status_line(child->status, child->status_buffer);
        if (limit.fired())
            line = fmt::format("failed CRIU did not finish the restore within {} s; stopped",
                               std::chrono::duration_cast<std::chrono::seconds>(bound).count());
    }
    if (!line.starts_with("restored ")) {
        agent.hosted.remove(id);
        co_await wait_for_exit(child->init);
        co_await remove_cgroup(child);
        child->slot.release();
        auto ended = end_lazy_pages();
        co_await std::move(ended);
        if (record->memory_here) record->memory_here->set();  // a chained fork waiting for it gives up
        auto criu_said = log_criu_failure(fmt::format("restore of child {} failed", id), workspace->work_fd(),
                                          restore_log);
        std::string why = line.starts_with("criu-failed ") ? criu_said
                          : line.starts_with("failed ")    ? line.substr(7)
                                                           : "its namespace init ended without a word";
        job.remove();
        if (line.starts_with("files-failed "))
            co_return restore_outcome{errc::file_unavailable,
                                      "cannot give the child the files it uses: " + line.substr(13), 0,
                                      lazy ? child : nullptr};
        // With lazy pages, the child's reader still takes the connection.
        co_return restore_outcome{errc::restore_failed, "CRIU could not restore the process: " + why, 0,
                                  lazy ? child : nullptr};
    }
    if (lazy)  // the daemon needs the images (and its log) until the last page is in
        asio::co_spawn(ex,
                       finish_lazy_pages(child, std::move(lazy_daemon), std::move(job), workspace, image.total_size,
                                         agent.opts.limits.image_timeout),
                       asio::detached);
    else
        job.remove();  // the images are in the child's memory now

    record->pid = static_cast<std::uint32_t>(std::atoi(line.c_str() + 9));
    child->running = true;
    co_return restore_outcome{{}, {}, record->pid, child};
}

}  // namespace rfork::agent
