// A directory that exists for one job and is removed with everything in it
// when the job ends, however it ends: through directory fds, as the user whose
// CRIU wrote into it may race the removal (remove_tree.hpp).
#pragma once

#include "common/remove_tree.hpp"

#include <filesystem>
#include <string>
#include <utility>

namespace rfork::agent {

class job_dir {
public:
    job_dir() = default;
    explicit job_dir(std::filesystem::path path) : path_(std::move(path)) {}
    job_dir(job_dir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
    job_dir& operator=(job_dir&& other) noexcept {
        if (this != &other) remove(), path_ = std::exchange(other.path_, {});
        return *this;
    }
    ~job_dir() { remove(); }

    const std::filesystem::path& path() const { return path_; }
    std::string operator/(const std::string& name) const { return (path_ / name).string(); }
    void remove() {
        if (!path_.empty()) remove_tree(path_);
        path_.clear();
    }

private:
    std::filesystem::path path_;
};

}  // namespace rfork::agent
