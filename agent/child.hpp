// A restored child: started in its own pid namespace under an init of ours,
// watched until it ends, its output forwarded line by line.
#pragma once

#include "agent.hpp"
#include "job_dir.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <string>
#include <system_error>

namespace rfork::agent {

struct restore_outcome {
    std::error_code ec;
    std::string message;  // on failure: CRIU's own line
    std::uint32_t pid = 0;
};

// Restores the image in `job`/images. On success the child runs on and is
// supervised in the background until it ends; `job` is removed either way.
asio::awaitable<restore_outcome> restore_child(agent_state& agent, const protocol::image_begin& image,
                                               const std::string& id, job_dir& job);

}  // namespace rfork::agent
