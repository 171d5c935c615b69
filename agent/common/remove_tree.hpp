// Removing a job's directory, into which CRIU wrote as the restored child's
// user: that user may swap a directory for a symlink while it is removed, or
// move one elsewhere, so the walk goes through directory fds, never by path.
#pragma once

#include <filesystem>

namespace rfork::agent {

// Removes `path` and all under it. Never follows a symlink (a link is removed,
// not what it names), never enters another mount (its mount point stays, with
// all in it), never leaves the tree (no "..": every directory is reached from
// the fd of its parent). True if nothing is left; on false the rest stays:
// a tree deeper than a bound, another mount, or one that kept growing.
bool remove_tree(const std::filesystem::path& path);

}  // namespace rfork::agent
