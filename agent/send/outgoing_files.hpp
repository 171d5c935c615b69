// The sending agent's side of bringing a process's files along: which
// files its image names (read from CRIU's own files.img), and what each is,
// looked at from the process's root with the process's rights. Their
// descriptions go to the receiver (protocol::file_manifest), which asks for
// the ones it lacks; those are read from the very files looked at here.
#pragma once

#include "common/file_identity.hpp"
#include "common/process.hpp"
#include "common/run_as.hpp"

#include <rfork/protocol.hpp>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace rfork::agent {

// A file as CRIU recorded it: opened by path on restore.
struct image_file_ref {
    std::string path;
    bool writable = false;  // open or mapped for writing
};

// The files CRIU opens by path when it restores the image in `images_dir_fd`
// (its files.img): the program, mapped files, open files, working
// directories; not those CRIU recreates itself (deleted files, kept in the
// image) nor external ones. One entry per path. Why not, if it cannot tell.
std::variant<std::vector<image_file_ref>, std::string> files_named_by_image(int images_dir_fd);

// The same, from the bytes of a files.img and a remap-fpath.img (empty if absent).
std::variant<std::vector<image_file_ref>, std::string> files_named_by(const std::vector<unsigned char>& files_img,
                                                                      const std::vector<unsigned char>& remaps_img);

struct outgoing_files {
    protocol::file_manifest manifest;
    std::vector<unique_fd> fds;  // per manifest entry: the regular file, open for reading
};

// Describes each file as the process sees it: resolved inside `root_fd` (a
// directory fd of the process's root) and, with `as`, opened with that
// user's rights only (the image of a user's process is that user's to
// write, so its names are not trusted further than that user's reach).
// Why not, naming the file, if one cannot be read, or is larger than
// `max_size` (--max-file-size): no larger file is read to be hashed.
std::variant<outgoing_files, std::string> describe_files(const std::vector<image_file_ref>& refs, int root_fd,
                                                         const run_as* as, file_identity_cache& identities,
                                                         std::uint64_t max_size);

}  // namespace rfork::agent
