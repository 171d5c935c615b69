// Checkpointing a process that asked to be forked: which process it is (the
// caller or its snapshot, checked to be what the request says), where CRIU
// must run to see it, and the dump itself, up to an image ready to send.
#pragma once

#include "common/agent_state.hpp"
#include "common/job_dir.hpp"
#include "common/process.hpp"
#include "criu/criu_workspace.hpp"
#include "peer/conversation.hpp"
#include "send/child_relay.hpp"
#include "send/outgoing_files.hpp"

#include <rfork/protocol.hpp>

#include <asio/awaitable.hpp>

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

namespace rfork::agent {

// The numbers on one line of /proc/PID/status: "Uid:" and "Gid:" (real,
// effective, saved, filesystem), "Groups:" (supplementary groups).
std::vector<std::uint32_t> status_numbers(int pid, std::string_view key);

// The process to checkpoint: the caller, or the snapshot it names, which must
// be its own child, of its own user, waiting on the socket the request names.
struct checkpoint_target {
    int pid = -1;
    unique_fd snapshot_pidfd;  // when it is the snapshot
};

// Takes the snapshot's pidfd, if any, from `fds` (the request's fds).
std::variant<checkpoint_target, failure> find_checkpoint_target(const ucred& cred,
                                                                 const protocol::fork_request& request,
                                                                 std::vector<unique_fd>& fds);

// How CRIU reaches a process: from here, or from inside a child's namespaces.
struct dump_target {
    int pid;                               // as CRIU sees it
    std::shared_ptr<hosted_child> within;  // the child restored here it runs in, if any
    unique_fd init;                        // and a pidfd of that child's namespace init
};

// Where CRIU can see `pid`, or nothing when in a pid namespace this agent did not make.
std::optional<dump_target> locate(const agent_state& agent, int pid);

// One of the image's files, open: its size is part of the total announced.
struct image_file {
    std::string name;
    unique_fd fd;
    std::uint64_t size;
};

// A checkpoint ready to go: CRIU's images, and the files they name.
struct checkpoint_image {
    job_dir job;                       // empty once a lazy dump owns it
    std::shared_ptr<criu_workspace> workspace;
    bool lazy = false;                 // its memory follows (relay->pages serves it)
    protocol::stdio_keys stdio;
    outgoing_files outgoing;           // the files the image names, for the receiver
    std::vector<image_file> files;     // the images themselves
};

// Checkpoints `pid` (`pidfd` is that process's) for `caller`, as CRIU sees it
// from `where`. A lazy dump's page server goes to `relay`.
asio::awaitable<std::variant<checkpoint_image, failure>> checkpoint(agent_state& agent,
                                                                    std::shared_ptr<child_relay> relay,
                                                                    dump_target where, int pid, int pidfd,
                                                                    ucred caller, protocol::fork_request request);

}  // namespace rfork::agent
