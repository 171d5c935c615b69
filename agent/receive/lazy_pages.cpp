#include "receive/lazy_pages.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "criu/criu.hpp"
#include "criu/page_criu.hpp"
#include "receive/lazy_page_server.hpp"
#include "receive/child_life.hpp"
#include "receive/restore.hpp"

#include <fmt/core.h>

#include <sys/resource.h>

#include <csignal>
#include <utility>

namespace rfork::agent {

namespace {

// The daemon's requests, answered. Should that fail, the daemon is cut off:
// it reads its end and gives up, instead of waiting on.
asio::awaitable<void> serve_daemon(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer) {
    try {
        co_await lazy_page_server::serve(child->pages, peer);
    } catch (...) {
        child->pages->close();
        throw;  // for spawn's log
    }
}

}  // namespace

asio::awaitable<std::optional<std::string>> start_lazy_pages(agent_state& agent, std::string id, std::shared_ptr<restored_child> child,
                                                             std::shared_ptr<peer_connection> peer,
                                                             std::shared_ptr<criu_workspace> workspace,
                                                             std::uint64_t image_size, std::uint64_t memory_size) {
    auto ex = agent.io.get_executor();
    auto command = lazy_pages_command(agent.criu, criu_page_socket_fd, criu_ready_fd);
    auto limit = agent.opts.limits.max_image_size;  // for the memory: what the files left of it
    auto daemon_end = co_await start_page_criu(ex, command, workspace->mappings(), std::nullopt, child->lazy_daemon);
    if (!daemon_end) {
        co_await wait_for_exit(child->lazy_daemon);
        co_return log_criu_failure(fmt::format("the lazy-pages daemon for child {} failed", id), workspace->work_fd(),
                                   lazy_pages_log);
    }
    // CRIU's daemon polls without sleeping while it waits for an answer: at
    // the lowest priority, it takes only what the agents leave idle.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(child->lazy_daemon.pid), 19);
    child->pages = std::make_shared<lazy_page_server>(ex, std::move(daemon_end),
                                                      limit > image_size ? limit - image_size : 0, memory_size);
    // Pages flow from now on: CRIU's restore itself touches some.
    spawn(ex, take_requests(child, peer), "the requests for child " + id);
    spawn(ex, serve_daemon(child, peer), "the pages of child " + id);
    co_return std::nullopt;
}

asio::awaitable<void> stop_lazy_pages(std::shared_ptr<restored_child> child) {
    if (!child->pages) co_return;
    child->pages->close();
    if (!child->lazy_daemon.pidfd) co_return;  // reaped already
    ::kill(child->lazy_daemon.pid, SIGKILL);
    co_await wait_for_exit(child->lazy_daemon);
}

asio::awaitable<void> finish_lazy_pages(std::shared_ptr<restored_child> child, [[maybe_unused]] job_dir job,
                                        std::shared_ptr<criu_workspace> workspace, std::uint64_t file_bytes,
                                        std::chrono::seconds image_timeout) {
    // Whoever waits for the memory is released however this ends; a child
    // whose memory is not known to be whole does not run on.
    struct memory_settled {
        std::shared_ptr<restored_child> child;
        bool whole = false;
        ~memory_settled() {
            if (!whole) kill_child(*child);
            child->record->memory_here->set();
        }
    } settled{child};
    // A sender that trickles pages just within the idle timeout would keep the
    // daemon and the images here for as long as it likes: the memory has the
    // image's bound too, counted from the restore.
    auto status = co_await wait_for_exit(child->lazy_daemon, image_timeout);
    auto& id = child->record->id;
    if (!status) {
        emit_event("memory_failed", {{"id", id}, {"code", int(errc::timed_out)}, {"text", "--image-timeout"}});
        log("child {}: its memory did not arrive whole within {} s (--image-timeout); killed", id,
            image_timeout.count());
    } else if (*status == 0) {
        settled.whole = true;
        log_image_complete(id, file_bytes + child->pages->bytes_in());
    } else {
        emit_event("memory_failed",
                   {{"id", id}, {"code", int(errc::transfer_failed)}, {"text", describe_wait_status(*status)}});
        log_criu_failure(fmt::format("child {}: fetching its memory failed ({}); killed", id,
                                     describe_wait_status(*status)),
                         workspace->work_fd(), lazy_pages_log);
    }
}

}  // namespace rfork::agent
