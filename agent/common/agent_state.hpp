// What every part of a running agent shares.
#pragma once

#include "receive/child_cgroup.hpp"
#include "common/children.hpp"
#include "receive/file_cache.hpp"
#include "common/file_identity.hpp"
#include "common/job_dir.hpp"
#include "common/options.hpp"

#include <asio/ssl/context.hpp>

#include <optional>

#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace rfork::agent {

// One place of --max-children: held from a fork's admission until its child
// has ended (or its restore failed), so a count of them is exact.
class child_slot {
public:
    child_slot() = default;
    explicit child_slot(unsigned& count) : count_(&++count) {}
    child_slot(child_slot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
    child_slot& operator=(child_slot&& other) noexcept {
        if (this != &other) {
            release();
            count_ = std::exchange(other.count_, nullptr);
        }
        return *this;
    }
    ~child_slot() { release(); }
    void release() {
        if (count_) --*count_;
        count_ = nullptr;
    }

private:
    unsigned* count_ = nullptr;
};

// Connections from other agents that have not yet got through TLS and their
// handshake (--max-pending-connections, --max-pending-per-source): what a
// flood, from one source or many, may hold at once. See receiver.cpp.
struct pending_peers {
    unsigned total = 0;
    std::map<asio::ip::address, unsigned> by_source{};  // an IPv4 address or an IPv6 /64
    // Refusals are logged once a second at most, with the count left unsaid.
    std::chrono::steady_clock::time_point last_refusal_logged{};
    unsigned refusals_unsaid = 0;
};

struct agent_state {
    asio::io_context& io;
    options opts;
    std::string criu{};    // the CRIU binary in use
    std::string self_exe{};// this binary's path at start: its CRIU is found beside it
    std::string host{};    // this host's name, as told to peers
    std::uint64_t next_job = 1;
    unsigned receiving = 0;            // images being received or restored (--max-restores)
    unsigned children = 0;             // forks admitted whose child has not ended (--max-children)
    // Where each child's cgroup goes; none only with --allow-unlimited-children.
    std::optional<cgroup_parent> cgroups{};
    pending_peers pending{};           // connections from agents still authenticating
    child_table<forked_child> forked{};// children of this host's programs, elsewhere
    child_table<hosted_child> hosted{};// children running here
    std::optional<asio::ssl::context> tls{};// every peer connection: the secret's, certificates', or this host's own
    std::string no_lazy_pages{};           // why lazy pages cannot work here, or empty
    std::optional<file_cache> files{};     // what other agents sent of their processes' files
    file_identity_cache own_files{};       // identities of this host's files: sent, or compared with a peer's

    // A fresh, empty, private directory under the work dir for one job (agent_state.cpp).
    job_dir make_job_dir(const std::string& name);
};

}  // namespace rfork::agent
