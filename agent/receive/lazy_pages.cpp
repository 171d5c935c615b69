#include "receive/lazy_pages.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "criu/criu.hpp"
#include "peer/page_relay.hpp"
#include "receive/child_life.hpp"
#include "receive/restore.hpp"

#include <fmt/core.h>

#include <csignal>
#include <utility>

namespace rfork::agent {

namespace {

// What the daemon writes, to the sending agent. Should that fail, the relay
// closes: the daemon reads its end and gives up, instead of waiting on.
asio::awaitable<void> relay_pages_out(std::shared_ptr<restored_child> child, std::shared_ptr<peer_connection> peer) {
    try {
        co_await page_relay::pump_out(child->pages, peer);
    } catch (...) {
        child->pages->close();
        throw;  // for spawn's log
    }
}

}  // namespace

asio::awaitable<std::optional<std::string>> start_lazy_pages(agent_state& agent, std::string id, std::shared_ptr<restored_child> child,
                                                             std::shared_ptr<peer_connection> peer,
                                                             std::shared_ptr<criu_workspace> workspace,
                                                             std::uint64_t image_size) {
    auto ex = agent.io.get_executor();
    auto command = lazy_pages_command(agent.criu, criu_page_socket_fd, criu_ready_fd);
    auto limit = agent.opts.limits.max_image_size;  // for the memory: what the files left of it
    child->pages = co_await start_page_criu(ex, command, workspace->mappings(), std::nullopt, child->lazy_daemon, -1,
                                            limit > image_size ? limit - image_size : 0);
    if (!child->pages) {
        co_await wait_for_exit(child->lazy_daemon);
        co_return log_criu_failure(fmt::format("the lazy-pages daemon for child {} failed", id), workspace->work_fd(),
                                   lazy_pages_log);
    }
    // Pages flow both ways from now on: CRIU's restore itself touches some.
    spawn(ex, take_requests(child, peer), "the requests for child " + id);
    spawn(ex, relay_pages_out(child, peer), "the page requests of child " + id);
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
