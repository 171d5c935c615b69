// Small, targeted edits of CRIU image files between dump and restore, on the
// sending side: the receiver checks images with its gate (image_gate.hpp).
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

// The same, in place, for tty-info.img in the directory `images_dir_fd` if it
// exists. CRIU may have written it as the process's user: only a regular
// file is edited, never through a link. Returns false if it exists and could
// not be edited.
bool adapt_external_terminals_in(int images_dir_fd);

}  // namespace rfork::agent
