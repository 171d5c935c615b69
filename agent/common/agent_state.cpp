#include "common/agent_state.hpp"

#include <filesystem>

namespace rfork::agent {

job_dir agent_state::make_job_dir(const std::string& name) {
    std::filesystem::path path = std::filesystem::path(opts.work_dir) / name;
    std::filesystem::create_directory(path);  // throws if it exists: a job never reuses another's directory
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return job_dir(path);
}

}  // namespace rfork::agent
