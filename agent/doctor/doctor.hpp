// `rfork-agent doctor [agent options | --config FILE] [--peer HOST:PORT ...]`:
// every check a first deployment fails on, each with the line that fixes it.
#pragma once

#include <string>
#include <vector>

namespace rfork::agent {

// args: what follows "doctor". Returns 0 when nothing failed, 1 otherwise,
// 2 for arguments or options it cannot make sense of.
int run_doctor(const std::vector<std::string>& args);

}  // namespace rfork::agent
