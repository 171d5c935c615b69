// A child restored on this host: started in its own pid namespace under an
// init of ours (ns_init.hpp), then served for its life over the connection
// from its parent's agent: its output and exit status go there, input and
// signals come from there.
#pragma once

#include "common/agent_state.hpp"
#include "common/job_dir.hpp"
#include "peer/peer_connection.hpp"
#include "common/run_as.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace rfork::agent {

struct restored_child;

struct restore_outcome {
    std::error_code ec;
    std::string message;  // on failure: CRIU's own line
    std::uint32_t pid = 0;
    std::shared_ptr<restored_child> child;
};

// Restores the image in `job`/images; `job` is removed either way (with lazy
// pages, once all of them are here). With lazy pages the child reads the
// connection from the start, for its pages; the outcome then has the child
// also on failure. `as`: the user a child that is not root's runs as (its
// capabilities are chosen here); CRIU then runs as that user too. The child
// runs in a cgroup of its own (child_cgroup.hpp) when the agent has a place
// for them; it and `slot` go once the child has ended.
asio::awaitable<restore_outcome> restore_child(agent_state& agent, const protocol::image_begin& image,
                                               const std::string& id, job_dir& job,
                                               std::shared_ptr<peer_connection> peer, std::optional<run_as> as,
                                               child_slot slot, std::vector<unsigned char> placements);

// Logs that all of a child's image is here, with the wall clock for scripts/bench.
void log_image_complete(const std::string& id, std::uint64_t bytes);


// Serves the child until it has ended and its parent's agent knows. If that
// agent goes away, the child runs on and its output goes to this agent's
// stdout, each line marked with its id.
asio::awaitable<void> serve_child(agent_state& agent, std::shared_ptr<restored_child> child,
                                  std::shared_ptr<peer_connection> peer);

}  // namespace rfork::agent
