// Small, targeted edits of CRIU image files between dump and restore.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

// A terminal the parent had as stdio stays with the parent: the child gets a
// terminal of its receiving agent in its place (--inherit-fd), whose output
// reaches the parent's terminal. Two edits of tty-info.img make that work,
// both only on the external terminals:
// - their session and process group are cleared: CRIU would otherwise try to
//   make the new terminal the controlling terminal of a session that is not
//   in the image, and fail ("No task found with sid");
// - their output processing (OPOST) is off: the parent's own terminal does it,
//   once; otherwise every "\n" would arrive as "\r\r\n".
// Returns the edited image, or nullopt if `image` is not a valid tty-info image.
std::optional<std::vector<unsigned char>> adapt_external_terminals(const std::vector<unsigned char>& image);

// The same, in place, for DIR/tty-info.img if it exists. Returns false if it
// exists and could not be edited.
bool adapt_external_terminals_in(const std::string& images_dir);

// The user and group ids a process will run with once restored.
struct process_ids {
    std::uint32_t uid, euid, suid, fsuid, gid, egid, sgid, fsgid;
};

// From a core-PID.img (core_entry.thread_core.creds); nullopt if it has none
// or is not a core image.
std::optional<process_ids> ids_of_core_image(const std::vector<unsigned char>& image);

// Of every process in the image directory; nullopt if any cannot be read.
std::optional<std::vector<process_ids>> ids_of_images(const std::string& images_dir);

}  // namespace rfork::agent
