#include "children.hpp"

#include <fmt/core.h>

#include <fstream>

namespace rfork::agent {

int restored_process_of(int init_pid) {
    // The init has one child of its own once CRIU is done: the restored process.
    std::ifstream in(fmt::format("/proc/{}/task/{}/children", init_pid, init_pid));
    int pid = -1;
    in >> pid;
    return in ? pid : -1;
}

}  // namespace rfork::agent
