// The decisions of a fork request that need no I/O: what CRIU is asked to
// do, and what the program is told when a step fails. The coroutines that
// serve the request (serve_fork.cpp) gather the facts and act on these.
#pragma once

#include "common/options.hpp"
#include "criu/criu.hpp"
#include "peer/conversation.hpp"
#include "peer/peer_connect.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/protocol.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

namespace rfork::agent {

// Below this much anonymous memory a snapshot goes whole: starting CRIU's
// lazy-pages daemon costs more than sending a few MiB (scripts/bench: 1 MiB
// whole ~33 ms, lazy ~50 ms).
inline constexpr std::int64_t lazy_pages_threshold = 16l << 20;

// What is known of the process to checkpoint once the request is checked.
struct dump_facts {
    int pid = 0;                          // in this agent's pid namespace
    int criu_pid = 0;                     // the same process as CRIU will see it
    bool snapshot = false;                // the caller's snapshot, not the caller
    unsigned caller_uid = 0;
    bool tcp_connections = false;         // never for a snapshot
    bool lazy_pages_here = true;          // this host can serve lazy pages
    std::int64_t anonymous_bytes = 0;     // its RssAnon
    std::uint64_t socket_inode = 0;       // its socket to this agent
    std::vector<std::string> externals;   // from inspect_stdio
};

struct dump_plan {
    dump_request request;
    bool lazy = false;  // its memory follows the child (lazy pages)
};

// CRIU's dump, or why the process cannot be checkpointed.
std::variant<dump_plan, failure> plan_dump(dump_facts facts);

// getsid() is 0 in the process (CRIU's own check fails on it) when its
// session's leader is in an outer pid namespace: `session` is its NSsid.
std::optional<failure> session_refusal(int pid, long session);

// Which credentials this agent holds: what a peer that refused them lacks.
enum class credentials { host_secret, shared_secret, certificates };
credentials credentials_of(const options& opts);

// What the program is told when the agent at `endpoint` could not be reached.
failure connect_refusal(const connect_failure& failed, const std::string& endpoint, credentials held);

// Programs wait for and signal children by these ids: one a peer chose must
// be plain (letters, digits and '-', at most 64).
bool plain_child_id(const std::string& id);

// The peer's answer to the image, judged. `sending` is how sending the image
// (or the files asked for) failed, `reading` how reading the answer did;
// `reply` the frame read when `reading` is empty.
std::variant<protocol::restored, failure> judge_answer(std::error_code sending, std::error_code reading,
                                                       const detail::received_frame& reply,
                                                       const std::string& endpoint);

// The failure when the peer did not answer within `bound` of the image.
failure answer_overdue(const std::string& endpoint, std::chrono::steady_clock::duration bound);

}  // namespace rfork::agent
