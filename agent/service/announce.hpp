// What the agent says once it listens: where, whom it trusts, its children's
// limits and what this host lacks; then that it is ready, to whoever waits.
#pragma once

#include "common/agent_state.hpp"

#include <string>

namespace rfork::agent {

// `unlimited`: why children go without cgroups, when they do (startup.hpp).
void announce(agent_state& agent, const std::string& unlimited);

// The agent_ready event, --ready-fd and the service manager (Type=notify):
// started means listening.
void report_ready(const agent_state& agent);

}  // namespace rfork::agent
