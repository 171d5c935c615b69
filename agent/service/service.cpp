#include "service/service.hpp"

#include "common/agent_state.hpp"
#include "common/log.hpp"
#include "common/spawn.hpp"
#include "local/local.hpp"
#include "receive/receiver.hpp"
#include "service/accept_loop.hpp"
#include "service/announce.hpp"
#include "service/listeners.hpp"
#include "service/startup.hpp"

#include <asio/signal_set.hpp>

#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>

namespace rfork::agent {

namespace {

// How the agent stops, once: on SIGINT or SIGTERM with status 0, or with
// status 1 when an accept loop died. A deaf agent would look alive to its
// service manager and to peers' connects' backlog; stopped, it is started
// again (Restart=on-failure) and the log says why.
struct stopping {
    asio::io_context& io;
    listeners open;
    int status = 0;

    void now(int with) {
        if (io.stopped()) return;
        status = with;
        open.close();
        io.stop();
    }
};

void start_accepting(agent_state& agent, const std::shared_ptr<stopping>& stop) {
    auto deaf = [stop] {
        log("stopping: the agent can no longer accept connections");
        stop->now(1);
    };
    const options& opts = agent.opts;
    spawn(agent.io.get_executor(), accept_loop(agent, stop->open.local, serve_local, opts.socket_path, deaf),
          "accepting on " + opts.socket_path);
    spawn(agent.io.get_executor(), accept_loop(agent, stop->open.network, serve_peer, opts.listen.to_string(), deaf),
          "accepting on " + opts.listen.to_string());
}

std::optional<listeners> listen(agent_state& agent) {
    try {
        return open_listeners(agent.io, agent.opts);
    } catch (const std::exception& e) {
        log("cannot listen: {}", e.what());
        return std::nullopt;
    }
}

// Everything the agent does until it is stopped.
int serve(agent_state& agent) {
    std::string unlimited;
    if (!prepare_agent(agent, unlimited)) return 1;
    auto open = listen(agent);
    if (!open) return 1;
    auto stop = std::make_shared<stopping>(stopping{agent.io, *open});
    start_accepting(agent, stop);
    asio::signal_set signals(agent.io, SIGINT, SIGTERM);
    signals.async_wait([stop](std::error_code ec, int signal) {
        if (ec) return;
        log("stopping on signal {}; children keep running", signal);
        stop->now(0);
    });
    announce(agent, unlimited);
    report_ready(agent);
    agent.io.run();
    std::error_code ignored;
    std::filesystem::remove(agent.opts.socket_path, ignored);
    return stop->status;
}

}  // namespace

int run_agent(const options& opts) {
    std::signal(SIGPIPE, SIG_IGN);
    auto io = std::make_unique<asio::io_context>(1);
    agent_state agent{.io = *io, .opts = opts};
    int status = serve(agent);
    // In this order: records only the tables hold go while the io_context
    // their timers use lives; then the io_context, and with it every
    // coroutine still suspended in it, while the state they refer to lives.
    agent.forked = {};
    agent.hosted = {};
    io.reset();
    return status;
}

}  // namespace rfork::agent
