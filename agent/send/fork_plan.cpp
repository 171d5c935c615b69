#include "send/fork_plan.hpp"

#include "criu/page_criu.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>

namespace rfork::agent {

std::variant<dump_plan, failure> plan_dump(dump_facts facts) {
    // A process that is not root's is dumped by CRIU running as its user
    // (run_as.hpp), which cannot repair TCP connections.
    bool as_user = facts.caller_uid != 0;
    if (facts.tcp_connections && as_user)
        return failure{errc::dump_failed,
                       fmt::format("pid {} has TCP connections, which CRIU can checkpoint only for root's "
                                   "processes (TCP repair needs CAP_NET_ADMIN)",
                                   facts.pid)};
    dump_plan plan;
    plan.request = dump_request{facts.criu_pid,          as_user,          facts.socket_inode,
                                std::move(facts.externals), facts.tcp_connections, !facts.snapshot};
    // A snapshot's memory can follow its child (lazy pages): nobody else
    // waits for the snapshot, which stays frozen until all of it has gone.
    // A small one goes whole (lazy_pages_threshold). Not for a user's
    // process: CRIU 4.2 restores lazy pages only as root.
    plan.lazy = facts.snapshot && !as_user && facts.lazy_pages_here && facts.anonymous_bytes >= lazy_pages_threshold;
    if (plan.lazy) {
        plan.request.lazy_ps_socket = criu_page_socket_fd;
        plan.request.lazy_status_fd = criu_ready_fd;
    }
    return plan;
}

std::optional<failure> session_refusal(int pid, long session) {
    // A snapshot makes a session of its own; a caller cannot.
    if (session != 0) return std::nullopt;
    return failure{errc::dump_failed,
                   fmt::format("pid {} belongs to a session whose leader is outside its pid namespace, which CRIU "
                               "cannot checkpoint: start the program in a session of its own (setsid)",
                               pid)};
}

credentials credentials_of(const options& opts) {
    if (!opts.secret_file.empty()) return credentials::shared_secret;
    if (!opts.cert.empty()) return credentials::certificates;
    return credentials::host_secret;
}

namespace {

// What a peer that failed TLS lacks, for the credentials this agent holds.
const char* tls_hint(credentials held) {
    switch (held) {
    case credentials::shared_secret: return "it does not hold this agent's shared secret (the same --secret-file)";
    case credentials::certificates:
        return "its certificate is not signed by this agent's authority (--ca), or it does not trust this agent's";
    case credentials::host_secret:
        return "without credentials this agent speaks only to agents of its own host (--secret-file, or --cert, "
               "--key and --ca, for other hosts)";
    }
    return "it holds other credentials";
}

}  // namespace

failure connect_refusal(const connect_failure& failed, const std::string& endpoint, credentials held) {
    using step = connect_failure::step;
    auto& why = failed.why;
    switch (failed.at) {
    case step::reach:
        return failure{errc::agent_unreachable, fmt::format("cannot reach an rfork agent at {} ({})", endpoint, why)};
    case step::tls:
        return failure{errc::agent_unreachable,
                       fmt::format("no TLS with the agent at {} ({}): {}", endpoint, why, tls_hint(held))};
    case step::wrong_host:
        // Signed by our authority, but for another host: a node's key in
        // the wrong hands, or a name that leads elsewhere. Nothing is sent.
        return failure{failed.code, fmt::format("the agent at {} {}: refusing to send it anything (its certificate "
                                                "must name the host dialed; rfork-agent keygen --host makes one)",
                                                endpoint, why)};
    case step::lost:
        return failure{errc::agent_unreachable, fmt::format("lost the rfork agent at {} ({})", endpoint, why)};
    case step::handshake:
        return failure{errc::agent_unreachable,
                       fmt::format("the peer at {} refused the handshake: {}", endpoint, why)};
    }
    return failure{errc::agent_unreachable, fmt::format("cannot reach an rfork agent at {} ({})", endpoint, why)};
}

bool plain_child_id(const std::string& id) {
    return !id.empty() && id.size() <= 64 &&
           std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
}

std::variant<protocol::restored, failure> judge_answer(std::error_code sending, std::error_code reading,
                                                       const detail::received_frame& reply,
                                                       const std::string& endpoint) {
    // A peer that stopped taking the image may still have said why.
    bool explained = !reading && reply.type == protocol::message_type::error;
    if (sending && !explained)
        return failure{errc::transfer_failed,
                       fmt::format("sending the image to {} failed: {}", endpoint, sending.message())};
    if (reading)
        return failure{errc::transfer_failed,
                       fmt::format("the agent at {} sent no answer after the image ({})", endpoint, reading.message())};
    if (explained) {
        auto e = protocol::error_of(reply.payload);
        return failure{e.code, fmt::format("{} (on {})", e.text, endpoint)};
    }
    protocol::restored child;
    if (reply.type != protocol::message_type::restored || protocol::decode(reply.payload, child))
        return failure{errc::unexpected_message, fmt::format("unexpected answer from the agent at {}", endpoint)};
    if (!plain_child_id(child.child_id))
        return failure{errc::unexpected_message, fmt::format("the agent at {} named its child '{}', which is not a "
                                                             "fresh child id",
                                                             endpoint, child.child_id)};
    return child;
}

failure answer_overdue(const std::string& endpoint, std::chrono::steady_clock::duration bound) {
    return failure{errc::timed_out,
                   fmt::format("the agent at {} did not answer within {} s of the image", endpoint,
                               std::chrono::duration_cast<std::chrono::seconds>(bound).count())};
}

}  // namespace rfork::agent
