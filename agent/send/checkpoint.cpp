#include "send/checkpoint.hpp"

#include "common/log.hpp"
#include "common/run_as.hpp"
#include "criu/criu.hpp"
#include "criu/page_criu.hpp"
#include "send/criu_image.hpp"
#include "send/fork_plan.hpp"
#include "send/lazy_ranges.hpp"

#include <rfork/detail/pidfd.hpp>
#include <rfork/detail/process_info.hpp>

#include <fmt/core.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace rfork::agent {

namespace fs = std::filesystem;

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

namespace {

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

std::string pid_namespace_of(int pid) {
    std::error_code ec;
    return fs::read_symlink(fmt::format("/proc/{}/ns/pid", pid), ec).string();
}

// The image's files, opened before anything is sent: their sizes are the
// total announced. CRIU may have run as the process's user, so the directory
// is that user's: only regular files count, opened without following a link.
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

// CRIU must find under `pid` the process that asked (or its snapshot):
// checked right before CRIU starts and, for a caller that CRIU leaves
// running, again once the image is written (a snapshot dies once dumped).
failure ended_early(int pid) {
    return failure{errc::dump_failed,
                   fmt::format("pid {} ended before its checkpoint was complete; nothing of it was sent", pid)};
}

// What came of CRIU's dump; `criu` is a lazy dump's CRIU, still serving pages.
struct dump_outcome {
    std::optional<failure> failed;
    child_process criu;
};

// Runs CRIU's `command`. A lazy dump says "ready" once the images are
// written, then serves the pages its pagemaps mark lazy (relay->pages
// streams them) until the child has them all; a whole one ends, within a
// bound that grows with the memory.
// `join`: a pidfd of the namespace init CRIU must run under, or -1.
asio::awaitable<dump_outcome> run_dump(agent_state& agent, std::shared_ptr<child_relay> relay,
                                       std::vector<std::string> command, std::shared_ptr<criu_workspace> workspace,
                                       std::optional<run_as> as, int join, int pid, bool lazy) {
    dump_outcome outcome;
    auto& dump = outcome.criu;
    bool dumped;
    if (lazy) {
        auto ex = agent.io.get_executor();  // named: GCC 12 and temporaries around co_await
        auto criu_end = co_await start_page_criu(ex, command, workspace->mappings(), as, dump, join);
        dumped = bool(criu_end);
        if (dumped) {
            auto ranges = lazy_ranges_in(workspace->images_fd());
            if (auto* why = std::get_if<std::string>(&ranges)) {
                ::shutdown(criu_end.get(), SHUT_RDWR);  // its page server reads the end, and ends
                criu_end.reset();
                co_await wait_for_exit(dump);
                outcome.failed = failure{errc::dump_failed, fmt::format("cannot read the image CRIU wrote: {}", *why)};
                co_return outcome;
            }
            relay->pages = std::make_shared<page_stream>(ex, std::move(criu_end),
                                                         std::move(std::get<std::vector<lazy_range>>(ranges)));
        }
    } else {
        dump = spawn(command, workspace->mappings(), 0, as ? &*as : nullptr, join);
        auto memory = static_cast<std::uint64_t>(detail::status_field(pid, "VmRSS")) * 1024;
        auto bound = criu_time_bound(agent.opts.limits.idle_timeout, memory);
        auto status = co_await wait_for_exit(dump, bound);
        if (!status) {
            outcome.failed = failure{errc::dump_failed,
                                     fmt::format("CRIU did not finish checkpointing pid {} within {} s; stopped", pid,
                                                 std::chrono::duration_cast<std::chrono::seconds>(bound).count())};
            co_return outcome;
        }
        dumped = *status == 0;
    }
    if (!dumped) {
        int status = lazy ? co_await wait_for_exit(dump) : 0;
        auto why = log_criu_failure(fmt::format("checkpoint of pid {} failed", pid), workspace->work_fd(), dump_log);
        outcome.failed = failure{errc::dump_failed, fmt::format("CRIU could not checkpoint pid {} ({}): {}", pid,
                                                                lazy ? describe_wait_status(status) : "it failed", why)};
    }
    co_return outcome;
}

// The images CRIU wrote, opened, and the files they name, described for the
// receiver (which asks for those it lacks) as the process finds them from
// its root `root_fd`, as `as` when the process is a user's.
std::optional<failure> read_image(checkpoint_image& image, int root_fd, const run_as* as, agent_state& agent) {
    int images = image.workspace->images_fd();
    if (!adapt_external_terminals_in(images))
        return failure{errc::dump_failed, "CRIU wrote a tty-info image rfork cannot read"};
    auto named = files_named_by_image(images);
    if (auto* why = std::get_if<std::string>(&named))
        return failure{errc::dump_failed, fmt::format("cannot read the image CRIU wrote: {}", *why)};
    auto described = describe_files(std::get<std::vector<image_file_ref>>(named), root_fd, as, agent.own_files,
                                    agent.opts.limits.max_file_size);
    if (auto* why = std::get_if<std::string>(&described)) return failure{errc::file_unavailable, *why};
    image.outgoing = std::move(std::get<outgoing_files>(described));
    auto opened = open_image_files(images);
    if (auto* ec = std::get_if<std::error_code>(&opened))
        return failure{errc::dump_failed, fmt::format("cannot read the image CRIU wrote: {}", ec->message())};
    image.files = std::move(std::get<std::vector<image_file>>(opened));
    return std::nullopt;
}

}  // namespace

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
        unique_fd init(detail::open_pidfd(child->init_pid));
        if (inner <= 0 || !init) return std::nullopt;
        return dump_target{inner, child, std::move(init)};
    }
    return std::nullopt;
}

asio::awaitable<std::variant<checkpoint_image, failure>> checkpoint(agent_state& agent,
                                                                    std::shared_ptr<child_relay> relay,
                                                                    dump_target where, int pid, int pidfd,
                                                                    ucred caller, protocol::fork_request request) {
    // A process that is not root's is dumped by CRIU running as its user
    // (run_as.hpp), here or inside its namespaces: the kernel then refuses
    // any process that user could not trace (another user's, a set-uid
    // program's), whatever happened to the pid since the request was checked.
    std::optional<run_as> as;
    if (caller.uid != 0) as = run_as{caller.uid, caller.gid, status_numbers(pid, "Groups:"), criu_capabilities};
    bool snapshot = request.flags & protocol::fork_request::snapshot;
    auto stdio = inspect_stdio(pid);
    // A snapshot has no TCP connection: the library makes none of a caller with one.
    auto planned = plan_dump({pid, where.pid, snapshot, caller.uid, !snapshot && detail::has_tcp_connections(pid),
                              agent.no_lazy_pages.empty(), detail::status_field(pid, "RssAnon") * 1024,
                              request.socket_inode, stdio.externals});
    if (auto* refused = std::get_if<failure>(&planned)) co_return std::move(*refused);
    auto& plan = std::get<dump_plan>(planned);

    checkpoint_image image;
    image.lazy = plan.lazy;
    image.stdio = stdio.keys;
    image.job = agent.make_job_dir(fmt::format("dump-{}-{}", pid, agent.next_job++));
    image.workspace = std::make_shared<criu_workspace>(image.job, as, criu_workspace::images_access::write);
    // The process's root, where the files its image names are found as it
    // finds them (a snapshot's is its parent's; it may be gone once dumped).
    unique_fd root(::open(fmt::format("/proc/{}/root", pid).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root || has_exited(pidfd)) co_return ended_early(pid);
    auto dumped = co_await run_dump(agent, relay, dump_command(agent.criu, plan.request), image.workspace, as,
                                    where.init.get(), pid, plan.lazy);
    if (dumped.failed) co_return std::move(*dumped.failed);
    // A lazy dump's job and log stay until its pages have gone.
    if (plan.lazy) watch_lazy_dump(agent, relay, std::move(dumped.criu), std::move(image.job), image.workspace, pid);
    if (!snapshot && has_exited(pidfd)) co_return ended_early(pid);
    if (auto failed = read_image(image, root.get(), as ? &*as : nullptr, agent)) co_return std::move(*failed);
    co_return std::move(image);
}

}  // namespace rfork::agent
