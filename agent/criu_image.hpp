// Small, targeted edits of CRIU image files between dump and restore.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

// A terminal the parent had as stdio stays with the parent: the child gets a
// terminal of its receiving agent in its place (--inherit-fd). CRIU would
// still try to make the old one the controlling terminal of a session that is
// not in the image, and fail ("No task found with sid"). Clearing the session
// and process group of the external terminals in tty-info.img keeps it from
// trying. Returns the edited image, or nullopt if `image` is not a valid
// tty-info image.
std::optional<std::vector<unsigned char>> clear_external_terminal_sessions(const std::vector<unsigned char>& image);

// The same, in place, for DIR/tty-info.img if it exists. Returns false if it
// exists and could not be edited.
bool clear_external_terminal_sessions_in(const std::string& images_dir);

}  // namespace rfork::agent
