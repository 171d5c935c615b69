// A child restored with lazy pages: its memory follows while it already
// runs. The sending agent streams it over the child's connection
// (send/page_stream.hpp); CRIU's lazy-pages daemon takes it from this
// agent's lazy_page_server.hpp.
#pragma once

#include "common/agent_state.hpp"
#include "common/job_dir.hpp"
#include "criu/criu_workspace.hpp"
#include "peer/peer_connection.hpp"
#include "receive/restored_child.hpp"

#include <asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace rfork::agent {

// Starts `criu lazy-pages` for `child` (child->lazy_daemon, child->pages),
// then the pages' traffic both ways: the restore itself touches some. The
// memory may take what --max-image-size leaves of it after the image's
// `image_size` bytes, and this agent holds at most the `memory_size` bytes
// announced at once. Returns why the daemon failed, or nullopt.
// `agent` outlives every coroutine of the agent (main.cpp).
asio::awaitable<std::optional<std::string>> start_lazy_pages(agent_state& agent, std::string id, std::shared_ptr<restored_child> child,
                                                             std::shared_ptr<peer_connection> peer,
                                                             std::shared_ptr<criu_workspace> workspace,
                                                             std::uint64_t image_size, std::uint64_t memory_size);

// After a failed restore: no more pages flow, and the daemon is killed and reaped.
asio::awaitable<void> stop_lazy_pages(std::shared_ptr<restored_child> child);

// Ends with the daemon: once it has all the child's pages, the image is
// complete here; if it fails, the child would find holes in its memory, so
// it is killed. Either way, or on any other way out, the record's
// memory_here is set. `job` goes when this ends: the daemon reads its
// images until then. Started once the child is restored.
asio::awaitable<void> finish_lazy_pages(std::shared_ptr<restored_child> child, job_dir job,
                                        std::shared_ptr<criu_workspace> workspace, std::uint64_t file_bytes,
                                        std::chrono::seconds image_timeout);

}  // namespace rfork::agent
