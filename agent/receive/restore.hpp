// Restoring a child on this host: started in its own pid namespace under an
// init of ours (ns_init.hpp), with new stdio (restore_plan.hpp), and served
// once it runs (child_life.hpp).
#pragma once

#include "common/agent_state.hpp"
#include "common/job_dir.hpp"
#include "common/run_as.hpp"
#include "peer/peer_connection.hpp"
#include "receive/restored_child.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace rfork::agent {

struct restore_outcome {
    std::error_code ec;
    std::string message;  // on failure: CRIU's own line
    std::uint32_t pid = 0;
    std::shared_ptr<restored_child> child;
};

// Restores the image in `job`/images; `job` is removed either way (with lazy
// pages, once all of them are here), and on a failure nothing of the restore
// is left when this returns. With lazy pages the child reads the connection
// from the start, for its pages; the outcome then has the child also on
// failure. `as`: the user a child that is not root's runs as (its
// capabilities are chosen here); CRIU then runs as that user too. The child
// runs in a cgroup of its own (child_cgroup.hpp) when the agent has a place
// for them; it and `slot` go once the child has ended. `agent` outlives
// every coroutine of the agent (main.cpp).
asio::awaitable<restore_outcome> restore_child(agent_state& agent, protocol::image_begin image, std::string id,
                                               job_dir job, std::shared_ptr<peer_connection> peer,
                                               std::optional<run_as> as, child_slot slot,
                                               std::vector<unsigned char> placements);

// Logs that all of a child's image is here, with the wall clock for scripts/bench.
void log_image_complete(const std::string& id, std::uint64_t bytes);

}  // namespace rfork::agent
