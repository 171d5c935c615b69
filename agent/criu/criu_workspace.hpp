// The two directories of one CRIU run, inside a job directory: images/ (what
// is dumped or restored) and work/ (CRIU's log and pid file). The job
// directory is root's alone. A CRIU that runs as a user (run_as.hpp) reaches
// these two through fds it inherits, /proc/self/fd/N, never through the job
// directory's path: nothing else of the agent's is in reach.
// - work/ is the user's.
// - images/ is the user's when CRIU writes them (a dump). When CRIU reads
//   them (a restore), they stay root's and the user's group may only read
//   them: an image checked by the agent cannot change before CRIU reads it,
//   not even by another process of that user.
// Whatever the agent reads back from a directory of the user's is read as
// hostile: regular files only, never through a symbolic link.
#pragma once

#include "common/job_dir.hpp"
#include "common/process.hpp"
#include "common/run_as.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

// Where CRIU (and a namespace init that starts it) finds the two directories.
inline constexpr int criu_images_fd = 20, criu_work_fd = 21;

class criu_workspace {
public:
    enum class images_access { write, read };

    // Makes job/images and job/work unless they exist, and hands them, with
    // what they hold, to `user` as above (root keeps them when nullopt).
    // Throws std::system_error.
    criu_workspace(const job_dir& job, const std::optional<run_as>& user, images_access access);

    // The directories as CRIU names them, and the fds that make those names work.
    static std::string images_dir() { return "/proc/self/fd/" + std::to_string(criu_images_fd); }
    static std::string work_dir() { return "/proc/self/fd/" + std::to_string(criu_work_fd); }
    std::vector<fd_mapping> mappings() const {
        return {{images_.get(), criu_images_fd}, {work_.get(), criu_work_fd}};
    }

    int images_fd() const { return images_.get(); }
    int work_fd() const { return work_.get(); }

private:
    unique_fd images_, work_;
};

// A file CRIU wrote in `dir_fd`, read back: only a regular file, opened
// without following a link, at most `limit` bytes; nullopt otherwise.
std::optional<std::string> read_criu_file(int dir_fd, const std::string& name, std::size_t limit = 64 << 20);

}  // namespace rfork::agent
