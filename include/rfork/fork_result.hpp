// What fork_remote returns: which side of the fork this is, and which child.
#pragma once

#include <string>
#include <utility>

namespace rfork {

// The child as its receiving agent names it. The same in parent and child.
struct child_info {
    std::string id;    // the receiving agent's id for this child
    std::string host;  // the receiving agent's host name
    int pid = 0;       // the child's pid; equal to the parent's, in its own pid namespace
};

class fork_result {
public:
    enum class side { none, parent, child };

    fork_result() = default;
    fork_result(side s, child_info child) : side_(s), child_(std::move(child)) {}

    // Only for a failed fork: what the agents said, for the non-throwing forms.
    static fork_result failure(std::string message) {
        fork_result r;
        r.message_ = std::move(message);
        return r;
    }

    bool is_parent() const noexcept { return side_ == side::parent; }
    bool is_child() const noexcept { return side_ == side::child; }
    side which() const noexcept { return side_; }
    const child_info& child() const noexcept { return child_; }
    // Empty after success; after a failure, the full explanation.
    const std::string& error_message() const noexcept { return message_; }

private:
    side side_ = side::none;
    child_info child_;
    std::string message_;
};

}  // namespace rfork
