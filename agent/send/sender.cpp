// The sending role: a local program asks to be forked to another host. Its
// agent checkpoints it (the process at the other end of the socket, never a
// pid named in a message), sends the image, answers the program, and then
// relays between the parent and the child for the child's life.
#include "local/local.hpp"

#include "peer/conversation.hpp"
#include "peer/page_relay.hpp"
#include "local/parent_stdio.hpp"
#include "peer/peer_connect.hpp"
#include "peer/peer_connection.hpp"
#include "common/watchdog.hpp"
#include "criu/criu.hpp"
#include "criu/criu_workspace.hpp"
#include "send/criu_image.hpp"
#include "send/outgoing_files.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/run_as.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/detail/process_info.hpp>
#include <rfork/endpoint.hpp>

#include <asio/ip/tcp.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <optional>
#include <variant>

namespace rfork::agent {

namespace fs = std::filesystem;
using detail::as_tuple_awaitable;

namespace {

constexpr std::uint32_t request_limit = 64 * 1024;
constexpr std::size_t chunk_size = 1 << 20;
constexpr auto connect_timeout = std::chrono::seconds(10);
constexpr long lazy_pages_threshold = 16l << 20;  // bytes of anonymous memory

std::string pid_namespace_of(int pid) {
    std::error_code ec;
    return fs::read_symlink(fmt::format("/proc/{}/ns/pid", pid), ec).string();
}

// How CRIU reaches a process: from here, or from inside a child's namespaces.
struct dump_target {
    int pid;                               // as CRIU sees it
    std::shared_ptr<hosted_child> within;  // the child restored here it runs in, if any
    unique_fd init;                        // and a pidfd of that child's namespace init
};

// A process in our own pid namespace is dumped from here. A child restored
// here (forking again: a chain) lives in the pid namespace of its init, and
// CRIU must run inside it, seeing the process by its pid there; a pid
// namespace only shows its processes to CRIU when its init is dumped too.
// The init is pinned by a pidfd now, while its record says it is not yet
// reaped: its pid may be reused before CRIU starts, the pidfd never.
std::optional<dump_target> locate(const agent_state& agent, int pid) {
    auto ns = pid_namespace_of(pid);
    if (ns == pid_namespace_of(::getpid())) return dump_target{pid, nullptr, {}};
    for (auto& [id, child] : agent.hosted.all()) {
        if (pid_namespace_of(child->init_pid) != ns) continue;
        auto inner = static_cast<int>(detail::status_field(pid, "NSpid"));
        unique_fd init(static_cast<int>(::syscall(SYS_pidfd_open, child->init_pid, 0)));
        if (inner <= 0 || !init) return std::nullopt;
        return dump_target{inner, child, std::move(init)};
    }
    return std::nullopt;
}

// The image's files, opened before anything is sent: their sizes are the
// total announced. CRIU may have run as the process's user, so the directory
// is that user's: only regular files count, opened without following a link.
struct image_file {
    std::string name;
    unique_fd fd;
    std::uint64_t size;
};

std::variant<std::vector<image_file>, std::error_code> open_image_files(int dir_fd) {
    std::vector<image_file> files;
    unique_fd listing(::dup(dir_fd));
    DIR* dir = listing ? ::fdopendir(listing.get()) : nullptr;
    if (!dir) return std::error_code(errno, std::generic_category());
    listing.release();
    ::rewinddir(dir);
    std::error_code failed;
    while (auto* entry = ::readdir(dir)) {
        std::string name = entry->d_name;
        if (name == "." || name == "..") continue;
        unique_fd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
            failed = fd ? std::error_code(errc::dump_failed) : std::error_code(errno, std::generic_category());
            break;
        }
        files.push_back({name, std::move(fd), static_cast<std::uint64_t>(st.st_size)});
    }
    ::closedir(dir);
    if (failed) return failed;
    std::sort(files.begin(), files.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return files;
}

// Streams the image's files as image_file + image_data frames, then image_end.
asio::awaitable<std::error_code> send_image_files(peer_connection& peer, std::vector<image_file> files) {
    detail::bytes chunk(chunk_size);
    for (auto& file : files) {
        protocol::image_file header{file.name, file.size};
        if (auto ec = co_await detail::write_message(peer, header)) co_return ec;
        for (std::uint64_t left = header.size; left > 0;) {
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk_size));
            auto got = ::read(file.fd.get(), chunk.data(), want);
            if (got <= 0) co_return got < 0 ? std::error_code(errno, std::generic_category()) : errc::truncated;
            auto frame = protocol::encode_frame(protocol::message_type::image_data,
                                                std::span(chunk.data(), static_cast<std::size_t>(got)));
            if (auto ec = co_await detail::write_bytes(peer, frame)) co_return ec;
            left -= static_cast<std::uint64_t>(got);
        }
        file.fd.reset();
    }
    protocol::image_end end;
    co_return co_await detail::write_message(peer, end);
}

// The bytes of the files the receiver asked for (file_request), each whole
// and in its order, then files_end; nothing for an empty request. Read from
// the very files described: one that shrank meanwhile stops the fork.
asio::awaitable<std::error_code> send_wanted_files(peer_connection& peer, const outgoing_files& files,
                                                   const protocol::file_request& request, std::uint64_t& sent) {
    if (request.wanted.empty()) co_return std::error_code{};  // nothing follows an empty request
    detail::bytes chunk(chunk_size);
    // Through send(): with lazy pages, the dump's page server writes on the connection too.
    for (auto i : request.wanted) {
        if (i >= files.fds.size() || !files.fds[i]) co_return errc::malformed_message;
        auto size = files.manifest.files[i].size;
        for (std::uint64_t at = 0; at < size;) {
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(size - at, chunk_size));
            auto got = ::pread(files.fds[i].get(), chunk.data(), want, static_cast<off_t>(at));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) co_return got < 0 ? std::error_code(errno, std::generic_category()) : errc::truncated;
            auto frame = protocol::encode_frame(protocol::message_type::file_data,
                                                std::span(chunk.data(), static_cast<std::size_t>(got)));
            if (!co_await peer.send(frame)) co_return errc::transfer_failed;
            at += static_cast<std::uint64_t>(got);
            sent += static_cast<std::uint64_t>(got);
        }
    }
    auto end = protocol::encode(protocol::files_end{});
    if (!co_await peer.send(end)) co_return errc::transfer_failed;
    co_return std::error_code{};
}

// The numbers on one line of /proc/PID/status: "Uid:" and "Gid:" (real,
// effective, saved, filesystem), "Groups:" (supplementary groups).
std::vector<std::uint32_t> status_numbers(int pid, std::string_view key) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::vector<std::uint32_t> numbers;
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with(key)) continue;
        std::istringstream words(line.substr(key.size()));
        for (std::uint32_t n; words >> n;) numbers.push_back(n);
        break;
    }
    return numbers;
}

// The connection to the child's host, kept for the child's life: its output
// and exit come back on it, signals and input go out on it.
struct child_relay {
    explicit child_relay(const asio::any_io_executor& ex) : peer(std::make_shared<peer_connection>(ex)) {}
    std::shared_ptr<peer_connection> peer;
    std::optional<output_sink> out, err;
    std::optional<input_source> in;
    std::shared_ptr<page_relay> pages;  // with lazy pages: the dump's page server
    std::shared_ptr<one_shot_event> pages_sent;  // and when it has ended
};

// A lazy dump ends once the child's host has all the pages, or the
// connection is gone; its log tells which. Its job directory goes then.
asio::awaitable<void> finish_lazy_dump(child_process dump, job_dir job, std::shared_ptr<criu_workspace> workspace,
                                       int pid, std::shared_ptr<one_shot_event> ended) {
    int status = co_await wait_for_exit(dump);
    ended->set();
    if (status != 0) {
        log_criu_failure(fmt::format("serving the pages of pid {} failed ({})", pid, describe_wait_status(status)),
                         workspace->work_fd(), dump_log);
    }
    job.remove();
}

// Everything between a valid request and the reply; returns the child or why not.
// `pid` is the caller, or its snapshot, and `pidfd` that process's pidfd;
// `caller` who asked.
asio::awaitable<std::variant<protocol::restored, failure>> fork_process(agent_state& agent, child_relay& relay,
                                                                          int pid, int pidfd, ucred caller,
                                                                          const protocol::fork_request& request) {
    auto& peer = *relay.peer;
    auto ep = endpoint::parse(request.endpoint);
    if (!ep) co_return failure{errc::bad_endpoint, "bad endpoint '" + request.endpoint + "': expected host:port"};
    bool snapshot = request.flags & protocol::fork_request::snapshot;
    // getsid() is 0 in the process (CRIU's own check fails on it) when its
    // session's leader is in an outer pid namespace, e.g. a shell outside a
    // container. A snapshot makes a session of its own; a caller cannot.
    if (detail::status_field(pid, "NSsid") == 0)
        co_return failure{errc::dump_failed,
                          fmt::format("pid {} belongs to a session whose leader is outside its pid namespace, which "
                                      "CRIU cannot checkpoint: start the program in a session of its own (setsid)",
                                      pid)};

    auto where = locate(agent, pid);
    if (!where)
        co_return failure{errc::not_permitted,
                          fmt::format("pid {} lives in a pid namespace this agent did not make; CRIU cannot dump it from here", pid)};
    // A child restored here whose memory is still arriving (lazy pages) is
    // dumped once it is all here: CRIU would read the holes.
    if (where->within && where->within->memory_here) co_await where->within->memory_here->wait();
    auto& limits = agent.opts.limits;
    if (auto failed = co_await connect_to_agent(peer, *ep, agent.tls ? &*agent.tls : nullptr,
                                                {connect_timeout, limits.handshake_timeout, limits.idle_timeout})) {
        using step = connect_failure::step;
        auto& why = failed->why;
        switch (failed->at) {
        case step::reach:
            co_return failure{errc::agent_unreachable,
                              fmt::format("cannot reach an rfork agent at {} ({})", request.endpoint, why)};
        case step::tls:
            co_return failure{errc::agent_unreachable,
                              fmt::format("no TLS with the agent at {} ({}): it did not prove this agent's "
                                          "credentials (the same --secret-file, or a certificate of the same "
                                          "authority)", request.endpoint, why)};
        case step::wrong_host:
            // Signed by our authority, but for another host: a node's key in
            // the wrong hands, or a name that leads elsewhere. Nothing is sent.
            co_return failure{failed->code, fmt::format("the agent at {} {}: refusing to send it anything (its "
                                                        "certificate must name the host dialed; rfork-agent keygen "
                                                        "--host makes one)",
                                                        request.endpoint, why)};
        case step::lost:
            co_return failure{errc::agent_unreachable,
                              fmt::format("lost the rfork agent at {} ({})", request.endpoint, why)};
        case step::handshake:
            co_return failure{errc::agent_unreachable,
                              fmt::format("the peer at {} refused the handshake: {}", request.endpoint, why)};
        }
    }

    // A process that is not root's is dumped by CRIU running as its user
    // (run_as.hpp), here or inside its namespaces: the kernel then refuses
    // any process that user could not trace (another user's, a set-uid
    // program's), whatever happened to the pid since the request was checked.
    std::optional<run_as> as;
    if (caller.uid != 0) as = run_as{caller.uid, caller.gid, status_numbers(pid, "Groups:"), criu_capabilities};
    // A snapshot has no TCP connection: the library makes none of a caller with one.
    bool tcp = !snapshot && detail::has_tcp_connections(pid);
    if (tcp && as)
        co_return failure{errc::dump_failed,
                          fmt::format("pid {} has TCP connections, which CRIU can checkpoint only for root's "
                                      "processes (TCP repair needs CAP_NET_ADMIN)", pid)};
    auto stdio = inspect_stdio(pid);
    auto job = agent.make_job_dir(fmt::format("dump-{}-{}", pid, agent.next_job++));
    auto workspace = std::make_shared<criu_workspace>(job, as, criu_workspace::images_access::write);
    dump_request dump_args{where->pid, as.has_value(), request.socket_inode, stdio.externals, tcp, !snapshot};
    // A snapshot's memory can follow its child (lazy pages): nobody else
    // waits for the snapshot, which stays frozen until all of it has gone.
    // A small one goes whole: starting CRIU's lazy-pages daemon costs more
    // than sending a few MiB (scripts/bench: 1 MiB whole ~33 ms, lazy ~50 ms).
    // (Not for a user's process: CRIU 4.2 restores lazy pages only as root.)
    bool lazy = snapshot && caller.uid == 0 && agent.no_lazy_pages.empty() &&
                detail::status_field(pid, "RssAnon") * 1024 >= lazy_pages_threshold;
    if (lazy) dump_args.lazy_ps_socket = criu_page_socket_fd, dump_args.lazy_status_fd = criu_ready_fd;
    auto command = dump_command(agent.criu, dump_args);
    // CRIU must find under `pid` the process that asked (or its snapshot):
    // checked right before CRIU starts and, for a caller that CRIU leaves
    // running, again once the image is written (a snapshot dies once dumped).
    auto ended = [pid] {
        return failure{errc::dump_failed,
                       fmt::format("pid {} ended before its checkpoint was complete; nothing of it was sent", pid)};
    };
    // The process's root, where the files its image names are found as it
    // finds them (a snapshot's is its parent's; it may be gone once dumped).
    unique_fd root(::open(fmt::format("/proc/{}/root", pid).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) co_return ended();
    if (has_exited(pidfd)) co_return ended();
    child_process dump;
    bool dumped;
    if (lazy) {
        // CRIU says "ready" once the images are written, then serves the
        // pages until the child has them all; the job and its log stay until then.
        auto ex = agent.io.get_executor();  // named: GCC 12 and temporaries around co_await
        relay.pages = co_await start_page_criu(ex, command, workspace->mappings(), as, dump, where->init.get());
        dumped = relay.pages != nullptr;
    } else {
        dump = spawn(command, workspace->mappings(), 0, as ? &*as : nullptr, where->init.get());
        auto memory = static_cast<std::uint64_t>(detail::status_field(pid, "VmRSS")) * 1024;
        auto bound = criu_time_bound(agent.opts.limits.idle_timeout, memory);
        auto status = co_await wait_for_exit(dump, bound);
        if (!status)
            co_return failure{errc::dump_failed,
                              fmt::format("CRIU did not finish checkpointing pid {} within {} s; stopped", pid,
                                          std::chrono::duration_cast<std::chrono::seconds>(bound).count())};
        dumped = *status == 0;
    }
    if (!dumped) {
        int status = lazy ? co_await wait_for_exit(dump) : 0;
        auto why = log_criu_failure(fmt::format("checkpoint of pid {} failed", pid), workspace->work_fd(), dump_log);
        co_return failure{errc::dump_failed, fmt::format("CRIU could not checkpoint pid {} ({}): {}", pid,
                                                         lazy ? describe_wait_status(status) : "it failed", why)};
    }
    if (lazy) {
        relay.pages_sent = std::make_shared<one_shot_event>(agent.io.get_executor());
        asio::co_spawn(agent.io, finish_lazy_dump(std::move(dump), std::move(job), workspace, pid, relay.pages_sent),
                       asio::detached);
    }
    if (!snapshot && has_exited(pidfd)) co_return ended();
    if (!adapt_external_terminals_in(workspace->images_fd()))
        co_return failure{errc::dump_failed, "CRIU wrote a tty-info image rfork cannot read"};

    // The files its image names, described for the receiver, which asks for those it lacks.
    auto named = files_named_by_image(workspace->images_fd());
    if (auto* why = std::get_if<std::string>(&named))
        co_return failure{errc::dump_failed, fmt::format("cannot read the image CRIU wrote: {}", *why)};
    auto described = describe_files(std::get<std::vector<image_file_ref>>(named), root.get(), as ? &*as : nullptr,
                                    agent.own_files, limits.max_file_size);
    if (auto* why = std::get_if<std::string>(&described)) co_return failure{errc::file_unavailable, *why};
    auto& outgoing = std::get<outgoing_files>(described);
    std::uint64_t file_bytes = 0;  // all the receiver could ask for
    for (auto& f : outgoing.manifest.files) file_bytes += f.size;

    auto opened = open_image_files(workspace->images_fd());
    if (auto* ec = std::get_if<std::error_code>(&opened))
        co_return failure{errc::dump_failed, fmt::format("cannot read the image CRIU wrote: {}", ec->message())};
    auto files = std::move(std::get<std::vector<image_file>>(opened));
    std::uint64_t total = 0;
    for (auto& file : files) total += file.size;
    protocol::image_begin begin{agent.host, static_cast<std::uint32_t>(pid), request.socket_inode, stdio.keys, total,
                                lazy ? protocol::image_begin::lazy_pages : 0u};
    std::error_code ec = co_await detail::write_message(peer, begin);
    if (!ec) ec = co_await detail::write_message(peer, outgoing.manifest);
    if (!ec) ec = co_await send_image_files(peer, std::move(files));
    if (!lazy) job.remove();  // the image is sent or lost: either way it is no longer needed here
    if (relay.pages && !ec) asio::co_spawn(agent.io, page_relay::pump_out(relay.pages, relay.peer), asio::detached);

    // The answer, or why the peer stopped taking the image (a limit, say).
    // The child's pages flow meanwhile, when they are lazy. A peer that
    // takes the image and says nothing must not hold the caller (or its
    // frozen snapshot) for ever: it gets as long as its own CRIU may take.
    auto answer_bound = limits.handshake_timeout + criu_time_bound(limits.idle_timeout, total + file_bytes);
    watchdog answer_due(peer, answer_bound);
    detail::received_frame reply;
    auto rec = co_await detail::read_frame(peer, reply, request_limit);
    // First the receiver's request for files it lacks, answered once the
    // image is out; then, with lazy pages, pages flow.
    // (A deadline that passes between reads cancels nothing: checked here too.)
    bool files_asked = false;
    while (!rec && !ec && !answer_due.fired()) {
        if (reply.type == protocol::message_type::file_request && !files_asked) {
            files_asked = true;
            protocol::file_request asked;
            if (protocol::decode(reply.payload, asked)) {
                ec = errc::malformed_message;
                break;
            }
            std::uint64_t sent = 0;
            ec = co_await send_wanted_files(peer, outgoing, asked, sent);
            if (ec) break;
            if (!asked.wanted.empty())
                log("sent {} files ({} bytes) of pid {} to {}", asked.wanted.size(), sent, pid, request.endpoint);
        } else if (relay.pages && page_relay::carries(reply.type)) {
            co_await relay.pages->take(reply);
        } else {
            break;
        }
        if (!answer_due.fired()) rec = co_await detail::read_frame(peer, reply, request_limit);
    }
    answer_due.stop();
    if (answer_due.fired())
        co_return failure{errc::timed_out,
                          fmt::format("the agent at {} did not answer within {} s of the image", request.endpoint,
                                      std::chrono::duration_cast<std::chrono::seconds>(answer_bound).count())};
    if (ec && (rec || reply.type != protocol::message_type::error))
        co_return failure{errc::transfer_failed,
                          fmt::format("sending the image to {} failed: {}", request.endpoint, ec.message())};
    if (rec)
        co_return failure{errc::transfer_failed, fmt::format("the agent at {} sent no answer after the image ({})",
                                                             request.endpoint, rec.message())};
    if (reply.type == protocol::message_type::error) {
        protocol::error_message e;
        if (protocol::decode(reply.payload, e)) e = {errc::malformed_message, "malformed error message"};
        if (e.text.starts_with("rfork: ")) e.text.erase(0, 7);
        co_return failure{e.code, fmt::format("{} (on {})", e.text, request.endpoint)};
    }
    protocol::restored child;
    if (reply.type != protocol::message_type::restored || protocol::decode(reply.payload, child))
        co_return failure{errc::unexpected_message, fmt::format("unexpected answer from the agent at {}", request.endpoint)};
    // Programs wait for and signal children by these ids: one the peer
    // chose may not be odd, nor replace another child's.
    bool plain = !child.child_id.empty() && child.child_id.size() <= 64 &&
                 std::all_of(child.child_id.begin(), child.child_id.end(),
                             [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
    if (!plain || agent.forked.find(child.child_id))
        co_return failure{errc::unexpected_message, fmt::format("the agent at {} named its child '{}', which is not "
                                                                "a fresh child id", request.endpoint, child.child_id)};
    co_return child;
}

// The parent's stdin, to the child, until it ends.
asio::awaitable<void> forward_input(std::shared_ptr<child_relay> relay) {
    std::vector<unsigned char> buffer(64 * 1024);
    for (;;) {
        auto n = co_await relay->in->read(buffer);
        auto frame = n == 0 ? protocol::encode_frame(protocol::message_type::child_input_end, {})
                            : protocol::encode_frame(protocol::message_type::child_input, std::span(buffer.data(), n));
        if (!co_await relay->peer->send(frame) || n == 0) co_return;
    }
}

asio::awaitable<void> send_signal(std::shared_ptr<child_relay> relay, int signal) {
    protocol::signal_child message{static_cast<std::uint32_t>(signal)};
    auto frame = protocol::encode(message);
    co_await relay->peer->send(frame);
}

// Until the child ends: its output to the parent's stdout and stderr, then its
// exit status to whoever waits. The record stays while the parent may ask.
asio::awaitable<void> relay_child(agent_state& agent, std::shared_ptr<child_relay> relay,
                                  std::shared_ptr<forked_child> child, unique_fd parent_pidfd) {
    if (relay->in) {
        asio::co_spawn(agent.io, forward_input(relay), asio::detached);
    } else {
        // Nothing to forward: the child's stdin ends now.
        auto end = protocol::encode_frame(protocol::message_type::child_input_end, {});
        co_await relay->peer->send(end);
    }
    // What ended it is told to waiters only once nothing of the fork is left.
    std::optional<int> status;
    std::error_code lost;
    detail::received_frame frame;
    for (;;) {
        if (auto ec = co_await detail::read_frame(*relay->peer, frame)) {
            lost = ec;
            break;
        }
        if (relay->pages && page_relay::carries(frame.type)) {
            co_await relay->pages->take(frame);
            continue;
        }
        if (frame.type == protocol::message_type::child_output) {
            protocol::child_output output;
            if (protocol::decode(frame.payload, output)) {
                lost = errc::malformed_message;
                break;
            }
            auto& sink = output.stream == protocol::output_stream::stdout_stream ? relay->out : relay->err;
            co_await sink->write(output.data);
            continue;
        }
        protocol::child_exit exit;
        if (frame.type != protocol::message_type::child_exit || protocol::decode(frame.payload, exit))
            lost = errc::unexpected_message;
        else
            status = static_cast<int>(exit.status);
        break;
    }
    child->signal = nullptr;
    relay->peer->close();
    if (relay->pages) {
        // The dump has had all it will get; nothing of the fork stays once
        // the parent learns the end.
        relay->pages->close();
        co_await relay->pages_sent->wait();
    }
    relay->out.reset();  // the parent's stdout, stderr and stdin are not ours to keep
    relay->err.reset();
    if (relay->in) relay->in->close();  // ends forward_input, which owns the relay too
    child->status = status;
    child->lost = lost;
    child->ended.set();  // wakes every waiter
    if (child->status)
        log("child {} on {} (of pid {}) ended with status {}", child->id, child->host, child->parent_pid, *child->status);
    else
        log("lost child {} on {} (of pid {}): {}", child->id, child->host, child->parent_pid, child->lost.message());

    // Its parent may still wait for it; once the parent is gone, nobody can.
    // Only the small record stays meanwhile: the connection (TLS state and
    // all) goes now, as a parent may fork many children before it exits.
    relay.reset();
    co_await wait_readable(std::move(parent_pidfd));
    agent.forked.remove(child->id);
}

}  // namespace

namespace {

// The process to checkpoint: the caller, or the snapshot it names, which must
// be its own child, of its own user, waiting on the socket the request names.
// `pidfd` is the caller's, or the snapshot's from the request.
struct checkpoint_target {
    int pid = -1;
    unique_fd snapshot_pidfd;  // when it is the snapshot
};

// A user's process must still run with the ids it connected with, all of
// them, and be dumpable (else /proc/PID is root's): not a set-id program it
// has since run, nor another process that took its pid.
bool runs_as(int pid, const ucred& cred) {
    auto uids = status_numbers(pid, "Uid:");
    auto gids = status_numbers(pid, "Gid:");
    auto all_are = [](const std::vector<std::uint32_t>& ids, std::uint32_t id) {
        return ids.size() == 4 && std::all_of(ids.begin(), ids.end(), [id](std::uint32_t i) { return i == id; });
    };
    struct stat st {};
    return all_are(uids, cred.uid) && all_are(gids, cred.gid) &&
           ::stat(fmt::format("/proc/{}", pid).c_str(), &st) == 0 && st.st_uid == cred.uid;
}

std::variant<checkpoint_target, failure> find_checkpoint_target(const ucred& cred,
                                                                 const protocol::fork_request& request,
                                                                 std::vector<unique_fd>& fds) {
    bool forward_stdin = request.flags & protocol::fork_request::forward_stdin;
    bool snapshot = request.flags & protocol::fork_request::snapshot;
    if (fds.size() != (forward_stdin ? 3u : 2u) + (snapshot ? 1u : 0u))
        return failure{errc::malformed_message, "a fork request carries the program's stdout and stderr (and stdin "
                                                "to forward it, and a pidfd of its snapshot)"};
    checkpoint_target target{cred.pid, {}};
    if (snapshot) {
        target.snapshot_pidfd = std::move(fds.back());
        fds.pop_back();
        // A pidfd's fdinfo names its process; any other fd names none.
        target.pid = static_cast<int>(
            detail::proc_field(fmt::format("/proc/self/fdinfo/{}", target.snapshot_pidfd.get()), "Pid"));
        if (target.pid <= 0 || detail::status_field(target.pid, "PPid") != cred.pid)
            return failure{errc::not_permitted, "the snapshot named in the request is not a child of the caller"};
    }
    if (cred.uid != 0 && !runs_as(target.pid, cred))
        return failure{errc::not_permitted,
                       fmt::format("pid {} no longer runs as uid {} and gid {} alone, or is not dumpable (a set-id "
                                   "program?): this agent checkpoints a user's process only as that user",
                                   target.pid, cred.uid, cred.gid)};
    // The connection named must really be the process's own open socket.
    if (!detail::socket_inodes(target.pid).count(request.socket_inode))
        return failure{errc::not_permitted, "the socket named in the request is not the caller's"};
    return target;
}

}  // namespace

asio::awaitable<void> serve_fork(agent_state& agent, local_socket& program, const ucred& cred, unique_fd caller,
                                 const protocol::fork_request& request, std::vector<unique_fd>& stdio) {
    bool forward_stdin = request.flags & protocol::fork_request::forward_stdin;
    auto found = find_checkpoint_target(cred, request, stdio);
    if (auto* f = std::get_if<failure>(&found)) {
        co_await answer_failure(program, *f);
        co_return;
    }
    auto& target = std::get<checkpoint_target>(found);
    int pid = target.pid;
    int target_pidfd = target.snapshot_pidfd ? target.snapshot_pidfd.get() : caller.get();
    unique_fd parent_pidfd = std::move(caller);

    if (pid == cred.pid)
        log("fork request from pid {} (uid {}) to {}", cred.pid, cred.uid, request.endpoint);
    else
        log("fork request from pid {} (uid {}) to {}, for its snapshot pid {}", cred.pid, cred.uid, request.endpoint, pid);
    auto started = std::chrono::steady_clock::now();
    auto relay = std::make_shared<child_relay>(agent.io.get_executor());
    std::variant<protocol::restored, failure> outcome;
    try {
        outcome = co_await fork_process(agent, *relay, pid, target_pidfd, cred, request);
    } catch (const std::exception& e) {
        outcome = failure{errc::internal_error, e.what()};
    }
    if (auto* f = std::get_if<failure>(&outcome)) {
        if (relay->pages) {  // a lazy dump serving pages gives up; the program hears once it is gone
            relay->pages->close();
            co_await relay->pages_sent->wait();
        }
        log("fork request from pid {} failed: {}", cred.pid, f->text);
        co_await answer_failure(program, *f);
        co_return;
    }
    auto& restored = std::get<protocol::restored>(outcome);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    log("forked pid {} to {}: child {} runs there as pid {} ({:.1f} ms)", cred.pid, request.endpoint,
        restored.child_id, restored.pid, ms);

    auto ex = agent.io.get_executor();
    // A user's stdio is used as that user (parent_stdio.hpp).
    std::optional<run_as> stdio_as;
    if (cred.uid != 0) stdio_as = run_as{cred.uid, cred.gid, status_numbers(cred.pid, "Groups:"), 0};
    const run_as* as = stdio_as ? &*stdio_as : nullptr;
    relay->out.emplace(ex, std::move(stdio[0]), as);
    relay->err.emplace(ex, std::move(stdio[1]), as);
    if (forward_stdin) relay->in.emplace(ex, std::move(stdio[2]), as);
    // Only as the parent's own open files allow (parent_stdio.hpp).
    if (!relay->out->usable()) log("pid {}'s stdout is not open for writing: its child's output there is dropped", cred.pid);
    if (!relay->err->usable()) log("pid {}'s stderr is not open for writing: its child's output there is dropped", cred.pid);
    if (relay->in && !relay->in->usable())
        log("pid {}'s stdin is not open for reading: its child's stdin ends at once", cred.pid);
    auto child = std::make_shared<forked_child>(ex);
    child->id = restored.child_id;
    child->host = restored.host;
    child->parent_pid = cred.pid;
    child->parent_uid = cred.uid;
    std::weak_ptr<child_relay> weak = relay;
    child->signal = [&agent, weak](int signal) {
        if (auto r = weak.lock()) asio::co_spawn(agent.io, send_signal(r, signal), asio::detached);
    };
    agent.forked.add(child);
    asio::co_spawn(agent.io, relay_child(agent, relay, child, std::move(parent_pidfd)), asio::detached);

    protocol::fork_reply reply{protocol::fork_side::parent, restored.child_id, restored.host, restored.pid};
    co_await answer(program, reply);
}

}  // namespace rfork::agent
