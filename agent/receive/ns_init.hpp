// `rfork-agent ns-init`: pid 1 of a restored child's pid namespace.
//
// It runs CRIU's restore inside the namespace, tells the agent on STATUS_FD
// "restored PID", "criu-failed WAIT_STATUS", "files-failed REASON" or
// "failed REASON" (restore_plan.hpp reads them), then reaps every process of
// the namespace (orphans come to pid 1) until the last one ends, and reports
// "exited WAIT_STATUS" for the child. The namespace lives exactly as long as
// it does. For a child that is not root's, it takes that user's identity
// first (run_as.hpp) and CRIU inherits it: nothing in the namespace is root.
// CRIU's directories are the fds of criu_workspace.hpp.
#pragma once

namespace rfork::agent {

// argv: rfork-agent ns-init STATUS_FD root|UID:GID:GROUPS:CAPS PLAN_FD|- -- CRIU_ARGV...
// CRIU is executed through ns_init_criu_fd (opened by the agent: its path may
// be out of the user's reach), CRIU_ARGV[0] being only its name.
int run_ns_init(int argc, char** argv);

inline constexpr int ns_init_criu_fd = 22;
// Where the child's files go (file_placement.hpp), when it has any to place.
inline constexpr int ns_init_plan_fd = 23;

}  // namespace rfork::agent
