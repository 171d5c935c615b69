// `rfork-agent list` and `rfork-agent kill ID`: ask this host's agent about
// the children running here.
#pragma once

#include <string>
#include <vector>

namespace rfork::agent {

// args: what follows the subcommand. Returns the process exit code.
int run_list(const std::vector<std::string>& args);
int run_kill(const std::vector<std::string>& args);

}  // namespace rfork::agent
