// What the agent notes about this host when it starts, and doctor checks.
#pragma once

namespace rfork::agent {

// CRIU caches its probe of the kernel's features in /run only on a tmpfs;
// elsewhere each dump and each restore probes again (~15 ms each).
bool run_is_tmpfs();

}  // namespace rfork::agent
