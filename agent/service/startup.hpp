// What the agent settles before it listens: its CRIU, its credentials and
// name, its children's cgroups, its work dir and file cache. Each step that
// fails says why in the log, and the agent does not start.
#pragma once

#include "common/agent_state.hpp"

#include <string>

namespace rfork::agent {

// Fills in `agent` from its options, or returns false. `unlimited` gets why
// children go without cgroups (--allow-unlimited-children), or stays empty.
bool prepare_agent(agent_state& agent, std::string& unlimited);

// Leftovers of an agent that died mid-job belong to nobody now: removed.
void prepare_work_dir(const std::string& dir);

}  // namespace rfork::agent
