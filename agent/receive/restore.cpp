#include "receive/restore.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "criu/criu.hpp"
#include "criu/criu_workspace.hpp"
#include "peer/conversation.hpp"
#include "receive/lazy_pages.hpp"
#include "receive/ns_init.hpp"
#include "receive/restore_plan.hpp"

#include <asio/posix/stream_descriptor.hpp>
#include <asio/this_coro.hpp>

#include <fmt/core.h>

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace rfork::agent {

using asio::posix::stream_descriptor;

namespace {

restore_outcome failed(std::error_code ec, std::string message) { return {ec, std::move(message), 0, nullptr}; }

// A restore that cannot be set up: the message is the sending agent's to read.
struct setup_failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

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

// What the namespace init is given besides its workspace: fds in place of
// the parent's (each with the CRIU key it replaces), its status pipe, CRIU
// and the placements. The ends it gets are closed here once it has them.
struct init_launch {
    std::vector<fd_mapping> inherited;
    std::vector<std::pair<int, std::string>> inherit;
    std::vector<unique_fd> given;
    int next_fd = status_fd_in_init + 1;
    unique_fd criu, plan;
    pipe_pair status;

    void give(unique_fd fd, const std::string& key, const std::optional<run_as>& as) {
        // CRIU reopens a pipe or terminal through /proc/self/fd: as the
        // child's user, it must be that user's, as a login's terminal is.
        if (as && ::fchown(fd.get(), as->uid, static_cast<gid_t>(-1)) != 0)
            throw std::system_error(errno, std::generic_category(), "chown of the child's stdio");
        inherited.push_back({fd.get(), next_fd});
        inherit.emplace_back(next_fd++, key);
        given.push_back(std::move(fd));
    }

    std::vector<fd_mapping> fds(const criu_workspace& workspace) const {
        auto all = inherited;
        all.push_back({status.write.get(), status_fd_in_init});
        for (auto& mapping : workspace.mappings()) all.push_back(mapping);
        all.push_back({criu.get(), ns_init_criu_fd});
        if (plan) all.push_back({plan.get(), ns_init_plan_fd});
        return all;
    }
};

// The child's end of its connection to its agent, with the fork's answer waiting in it.
unique_fd connection_with_answer(const agent_state& agent, const protocol::image_begin& image, const std::string& id) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw setup_failure("socketpair failed");
    unique_fd ours(pair[0]), childs(pair[1]);
    auto answer = handshake_and(protocol::fork_reply{protocol::fork_side::child, id, agent.host, image.pid});
    if (::write(ours.get(), answer.data(), answer.size()) != static_cast<ssize_t>(answer.size()))
        throw setup_failure("could not prepare the child's answer");
    return childs;  // ours closes: the child reads its answer, then end of stream
}

// New pipes and terminals take the place of the parent's stdio (plan_stdio):
// the child's ends to the init, ours to `child`.
void make_stdio(restored_child& child, const protocol::stdio_keys& stdio, init_launch& launch,
                const std::optional<run_as>& as) {
    for (auto& end : plan_stdio(stdio)) {
        auto p = end.terminal ? make_terminal() : make_pipe();
        auto child_end = end.child_reads ? std::move(p.read) : std::move(p.write);
        auto our_end = end.child_reads ? std::move(p.write) : std::move(p.read);
        launch.give(std::move(child_end), end.key, as);
        auto stream = std::make_shared<stream_descriptor>(child.status.get_executor(), our_end.release());
        if (end.is_stdin) {
            child.input = stream;
            child.input_is_terminal = end.terminal;
        }
        if (end.output) child.outputs.push_back({stream, *end.output, end.terminal});
    }
}

// Where the child's files go (file_placement.hpp), for its namespace init to read.
unique_fd placements_file(const std::vector<unsigned char>& placements) {
    if (placements.empty()) return {};
    unique_fd plan(::memfd_create("rfork-placements", MFD_CLOEXEC));
    if (!plan || ::write(plan.get(), placements.data(), placements.size()) != static_cast<ssize_t>(placements.size()) ||
        ::lseek(plan.get(), 0, SEEK_SET) != 0)
        throw setup_failure("cannot hand the child's files to its namespace");
    return plan;
}

// Everything the init needs but its workspace; the child gets its cgroup,
// made before anything of it runs. Throws setup_failure or std::system_error.
init_launch prepare_launch(agent_state& agent, const protocol::image_begin& image, const std::string& id,
                           restored_child& child, const std::optional<run_as>& as,
                           const std::vector<unsigned char>& placements) {
    init_launch launch;
    launch.criu.reset(::open(agent.criu.c_str(), O_PATH | O_CLOEXEC));  // for ns-init, see ns_init.hpp
    if (!launch.criu) throw setup_failure(fmt::format("cannot open CRIU at {}: {}", agent.criu, std::strerror(errno)));
    launch.give(connection_with_answer(agent, image, id), fmt::format("socket:[{}]", image.socket_inode), as);
    if (agent.cgroups) {
        try {
            child.cgroup.emplace(*agent.cgroups, id,
                                 child_limits{agent.opts.limits.child_max_pids, agent.opts.limits.child_max_memory});
        } catch (const std::exception& e) {
            throw setup_failure(fmt::format("cannot make the child's cgroup: {}", e.what()));
        }
    }
    make_stdio(child, image.stdio, launch, as);
    launch.status = make_pipe();
    launch.plan = placements_file(placements);
    return launch;
}

// Known from now on: CRIU resumes the child before it tells us, and the
// child may fork again at once (a chain), from inside this namespace.
void add_record(agent_state& agent, restored_child& child, const protocol::image_begin& image, const std::string& id,
                bool lazy) {
    auto record = std::make_shared<hosted_child>();
    record->id = id;
    record->origin = image.origin_host;
    record->pid = image.pid;
    record->init_pid = child.init.pid;
    if (lazy) record->memory_here = std::make_shared<one_shot_event>(agent.io.get_executor());
    child.record = record;
    agent.hosted.add(record);
}

// The init's word on the restore. CRIU, running as the child's user, can be
// stopped by that user: the restore has a bound, and its whole namespace
// goes when it passes.
asio::awaitable<std::string> wait_until_restored(std::shared_ptr<restored_child> child,
                                                 std::chrono::steady_clock::duration bound) {
    deadline limit(co_await asio::this_coro::executor, child->init.pidfd.get(), bound);
    auto line = co_await read_status_line(child);
    if (limit.fired())
        line = fmt::format("failed CRIU did not finish the restore within {} s; stopped",
                           std::chrono::duration_cast<std::chrono::seconds>(bound).count());
    co_return line;
}

// What a restore holds until it is known to have succeeded.
struct restore_state {
    agent_state& agent;  // outlives every coroutine of the agent (main.cpp)
    std::string id;
    std::shared_ptr<restored_child> child;
    job_dir job;
};

// Undoes a failed restore, whatever it got to: when this returns, nothing
// of it is left (a started init is killed and reaped, its cgroup removed,
// the lazy-pages daemon killed and reaped), its place among
// --max-children is free and whoever waits for its memory is released.
asio::awaitable<void> undo_restore(std::shared_ptr<restore_state> s) {
    auto& child = s->child;
    if (child->record) s->agent.hosted.remove(s->id);
    kill_child(*child);  // it has said its last word, or never will
    if (child->init.pidfd) co_await wait_for_exit(child->init);
    co_await remove_cgroup(child);
    child->slot.release();
    co_await stop_lazy_pages(child);
    if (child->record && child->record->memory_here) child->record->memory_here->set();  // a chained fork gives up
    s->job.remove();
}

// The one cleanup of a restore. A failure (an exception too, see
// restore_child) awaits undo(); should the restore be left any other way
// (its coroutine destroyed while it waits), the destructor kills what runs
// at once and leaves the rest to undo_restore.
class restore_guard {
public:
    explicit restore_guard(std::shared_ptr<restore_state> state) : state_(std::move(state)) {}
    restore_guard(const restore_guard&) = delete;
    restore_guard& operator=(const restore_guard&) = delete;
    ~restore_guard() {
        if (!state_) return;
        auto& child = *state_->child;
        kill_child(child);
        if (child.lazy_daemon.pidfd) ::kill(child.lazy_daemon.pid, SIGKILL);
        // Not while the agent stops: its io_context then runs nothing more,
        // and each resource goes with its owner.
        if (!state_->agent.io.stopped())
            spawn(state_->agent.io.get_executor(), undo_restore(state_), "undoing the restore of child " + state_->id);
    }

    asio::awaitable<void> undo() { return undo_restore(std::exchange(state_, nullptr)); }
    void keep() { state_.reset(); }

private:
    std::shared_ptr<restore_state> state_;
};

// Every step of a restore; on a failure the caller undoes them. Over 60
// lines: one straight sequence, each step a call, whose order is the point.
asio::awaitable<restore_outcome> restore_steps(std::shared_ptr<restore_state> s, protocol::image_begin image,
                                               std::shared_ptr<peer_connection> peer, std::optional<run_as> as,
                                               std::vector<unsigned char> placements) {
    auto& agent = s->agent;
    auto& child = s->child;
    bool lazy = image.flags & protocol::image_begin::lazy_pages;
    // CRIU restores no cgroup here (--manage-cgroups=ignore), yet the sets an
    // image names (a root child's: a user's image has none) make it start a
    // helper in the child's pid namespace, where that helper can take a pid
    // the image needs: a chain's, whose pids are small.
    std::error_code no_sets;
    std::filesystem::remove(s->job.path() / "images" / "cgroup.img", no_sets);
    auto launch = prepare_launch(agent, image, s->id, *child, as, placements);

    // A child that is not root's is restored by CRIU running as its user
    // (run_as.hpp): the kernel holds it to what that user may do.
    if (as) as->capabilities = criu_restore_capabilities;
    auto workspace = std::make_shared<criu_workspace>(s->job, as, criu_workspace::images_access::read);
    if (lazy) {  // the daemon first: the restore hands it the child's userfaultfd
        auto why = co_await start_lazy_pages(agent, s->id, child, peer, workspace, image.total_size, image.memory_size);
        if (why) co_return failed(errc::restore_failed, "CRIU could not serve lazy pages: " + *why);
    }

    auto argv = ns_init_command(agent.criu, launch.inherit, lazy, as,
                                launch.plan ? std::optional<int>(ns_init_plan_fd) : std::nullopt);
    try {
        child->init = spawn(argv, launch.fds(*workspace), CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC, nullptr, -1,
                            child->cgroup ? child->cgroup->procs_fds() : std::vector<int>{});
        if (child->cgroup) child->cgroup->close_procs();  // joined: no one else may be moved in by them
    } catch (const std::exception& e) {
        co_return failed(errc::internal_error, std::string("cannot start the restore: ") + e.what());
    }
    launch.status.write.reset();
    launch.given.clear();
    child->status.assign(launch.status.read.release());
    add_record(agent, *child, image, s->id, lazy);

    auto line = co_await wait_until_restored(child, criu_time_bound(agent.opts.limits.idle_timeout, image.total_size));
    auto status = parse_init_status(line);
    if (status.what != init_status::kind::restored) {
        auto criu_said =
            log_criu_failure(fmt::format("restore of child {} failed", s->id), workspace->work_fd(), restore_log);
        auto [ec, message] = restore_failure(status, criu_said);
        co_return failed(ec, message);
    }
    if (lazy)  // the daemon needs the images (and its log) until the last page is in
        spawn(agent.io.get_executor(),
              finish_lazy_pages(child, std::move(s->job), workspace, image.total_size,
                                agent.opts.limits.image_timeout),
              "fetching the memory of child " + s->id);
    else
        s->job.remove();  // the images are in the child's memory now
    child->record->pid = static_cast<std::uint32_t>(status.number);
    child->running = true;
    co_return restore_outcome{{}, {}, child->record->pid, child};
}

}  // namespace

void log_image_complete(const std::string& id, std::uint64_t bytes) {
    auto clock_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now().time_since_epoch()).count();
    emit_event("image_complete", {{"id", id}, {"bytes", bytes}});
    log("image for child {} complete: {} bytes (clock_ns={})", id, bytes, clock_ns);
}

asio::awaitable<restore_outcome> restore_child(agent_state& agent, protocol::image_begin image, std::string id,
                                               job_dir job, std::shared_ptr<peer_connection> peer,
                                               std::optional<run_as> as, child_slot slot,
                                               std::vector<unsigned char> placements) {
    bool lazy = image.flags & protocol::image_begin::lazy_pages;
    if (as && lazy)
        co_return failed(errc::restore_failed, fmt::format("uid {}'s process came with lazy pages, which CRIU restores "
                                                           "only as root; its agent must send it whole",
                                                           as->uid));
    auto child = std::make_shared<restored_child>(agent.io.get_executor());
    child->slot = std::move(slot);
    auto state = std::make_shared<restore_state>(restore_state{agent, id, child, std::move(job)});
    restore_guard guard(state);
    restore_outcome outcome;
    try {
        outcome = co_await restore_steps(std::move(state), std::move(image), std::move(peer), std::move(as),
                                         std::move(placements));
    } catch (const std::exception& e) {  // setup_failure, or a system call's
        outcome = failed(errc::internal_error, e.what());
    }
    if (!outcome.ec) {
        guard.keep();
        co_return outcome;
    }
    co_await guard.undo();
    // With lazy pages, the child's reader still takes the connection.
    if (lazy) outcome.child = child;
    co_return outcome;
}

}  // namespace rfork::agent
