// `rfork-agent ns-init`: pid 1 of a restored child's pid namespace.
//
// It runs CRIU's restore inside the namespace, tells the agent on STATUS_FD
// "restored PID", "criu-failed WAIT_STATUS" or "failed REASON", then reaps every process of the
// namespace (orphans come to pid 1) until the last one ends, and reports
// "exited WAIT_STATUS" for the child. The namespace lives exactly as long as
// it does.
#pragma once

namespace rfork::agent {

// argv: rfork-agent ns-init STATUS_FD PID_FILE -- CRIU_ARGV...
int run_ns_init(int argc, char** argv);

}  // namespace rfork::agent
