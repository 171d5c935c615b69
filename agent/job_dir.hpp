// A directory that exists for one job and is removed with everything in it
// when the job ends, however it ends.
#pragma once

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
        std::error_code ignored;
        if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
        path_.clear();
    }

private:
    std::filesystem::path path_;
};

}  // namespace rfork::agent
