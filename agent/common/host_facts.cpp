#include "common/host_facts.hpp"

#include <linux/magic.h>
#include <sys/statfs.h>

namespace rfork::agent {

bool run_is_tmpfs() {
    struct statfs run {};
    return ::statfs("/run", &run) == 0 && run.f_type == TMPFS_MAGIC;
}

}  // namespace rfork::agent
