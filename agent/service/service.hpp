// The running agent: everything `rfork-agent [OPTIONS]` does until it is
// stopped.
#pragma once

#include "common/options.hpp"

namespace rfork::agent {

// Returns the exit code: 0 stopped by SIGINT or SIGTERM (its children keep
// running), 1 could not start, or could no longer accept connections.
int run_agent(const options& opts);

}  // namespace rfork::agent
