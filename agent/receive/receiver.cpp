#include "receive/receiver.hpp"

#include "receive/child_life.hpp"
#include "receive/restore.hpp"
#include "peer/conversation.hpp"
#include "receive/file_placement.hpp"
#include "receive/image_gate.hpp"
#include "peer/peer_connection.hpp"
#include "peer/tls.hpp"
#include "common/watchdog.hpp"
#include "common/events.hpp"
#include "common/log.hpp"
#include "common/process.hpp"

#include <rfork/detail/frame_io.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <set>
#include <string_view>
#include <variant>

namespace rfork::agent {

namespace {

// The largest file manifest taken: 4096 files with long paths.
constexpr std::uint32_t manifest_limit = 4u << 20;

// Unique among the children here: a record never replaces another's.
std::string new_child_id(const agent_state& agent) {
    std::random_device random;
    for (;;) {
        auto id = fmt::format("{:08x}", random());
        if (!agent.hosted.find(id)) return id;
    }
}

// Why a stream of `what` ("the image", "the files") ended before it was
// whole: one of its bounds passed, or the connection failed; nothing once a
// frame came in time (the idle bound then starts again).
std::optional<failure> arrival_problem(const watchdog<peer_connection>& whole, watchdog<peer_connection>& idle,
                                       std::error_code ec,
                                       const limits& limits, std::string_view what) {
    if (whole.fired())
        return failure{errc::timed_out, fmt::format("{} did not arrive whole within {} s (--image-timeout)", what,
                                                    limits.image_timeout.count())};
    if (idle.fired())
        return failure{errc::timed_out,
                       fmt::format("{} stalled for {} s (--idle-timeout)", what, limits.idle_timeout.count())};
    idle.arm();
    if (ec)
        return failure{ec == asio::error::eof ? std::error_code(errc::truncated) : ec,
                       fmt::format("{} stopped arriving: {}", what, ec.message())};
    return std::nullopt;
}

// Writes the image's files into `dir`, exactly as announced, until image_end.
asio::awaitable<std::optional<failure>> receive_files(std::shared_ptr<peer_connection> connection, std::string dir,
                                                     limits limits) {
    auto& peer = *connection;
    unique_fd file;
    std::uint64_t left = 0, total = 0, files = 0;
    std::string name;
    detail::received_frame frame;
    watchdog idle(peer, limits.idle_timeout);
    watchdog whole(peer, limits.image_timeout);  // never re-armed: frames just within the idle timeout end too
    for (;;) {
        auto ec = co_await detail::read_frame(peer, frame);
        if (auto problem = arrival_problem(whole, idle, ec, limits, "the image")) co_return problem;
        if (frame.type == protocol::message_type::image_data) {
            if (!file || frame.payload.size() > left)
                co_return failure{errc::malformed_message, "image data beyond the announced file size"};
            for (std::size_t done = 0; done < frame.payload.size();) {
                auto n = ::write(file.get(), frame.payload.data() + done, frame.payload.size() - done);
                if (n < 0)
                    co_return failure{errc::transfer_failed,  // the receiver could not store it
                                              fmt::format("cannot write {}: {}", name, std::strerror(errno))};
                done += static_cast<std::size_t>(n);
            }
            left -= frame.payload.size();
            continue;
        }
        if (file && left > 0)
            co_return failure{errc::truncated, fmt::format("image file {} ended {} bytes short", name, left)};
        file.reset();
        if (frame.type == protocol::message_type::image_end) co_return std::nullopt;
        protocol::image_file header;
        if (frame.type != protocol::message_type::image_file || protocol::decode(frame.payload, header))
            co_return failure{errc::malformed_message, "expected an image file"};
        name = header.name;
        left = header.size;
        total += header.size;
        if (++files > limits.max_image_files)
            co_return failure{errc::limit_exceeded, fmt::format("the image has more files than this agent accepts "
                                                                "(--max-image-files {})", limits.max_image_files)};
        if (header.size > limits.max_image_size || total > limits.max_image_size)
            co_return failure{errc::limit_exceeded, fmt::format("the image is larger than this agent accepts "
                                                                "(--max-image-size {} bytes)", limits.max_image_size)};
        // Refused before a byte of it is taken: no real image holds one so large.
        if (auto cap = max_image_file_size(name); cap && header.size > *cap)
            co_return failure{errc::limit_exceeded,
                              fmt::format("image file {} of {} bytes is larger than CRIU writes such a file ({} bytes "
                                          "at most)",
                                          name, header.size, *cap)};
        // O_EXCL|O_NOFOLLOW: a name is a plain new file in our own directory, nothing else.
        file.reset(::open((dir + "/" + name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!file)
            co_return failure{errc::transfer_failed,  // the receiver could not store it
                                      fmt::format("cannot create image file {}: {}", name, std::strerror(errno))};
    }
}

// The files asked for (file_request), in its order, each into the file
// cache once all its bytes are here and their SHA-256 is the one announced.
// By reference: handle_peer's own, which awaits this at once (the manifest
// may be megabytes), and the agent's cache, which outlives every coroutine.
asio::awaitable<std::optional<failure>> receive_wanted_files(peer_connection& peer,
                                                             const protocol::file_manifest& manifest,
                                                             const std::vector<std::uint32_t>& wanted,
                                                             file_cache& cache, const limits& limits,
                                                             std::uint64_t& received) {
    watchdog idle(peer, limits.idle_timeout);
    watchdog whole(peer, limits.image_timeout);
    std::size_t next = 0;
    std::optional<file_cache::incoming> current;
    auto finish = [&]() -> std::optional<failure> {
        auto& path = manifest.files[wanted[next]].path;
        if (auto why = current->finish(); !why.empty())
            return failure{errc::transfer_failed, fmt::format("{} did not arrive as announced: {}", path, why)};
        current.reset();
        ++next;
        return std::nullopt;
    };
    detail::received_frame frame;
    for (;;) {
        // Sizes are known: an empty file is whole before any bytes.
        while (!current && next < wanted.size()) {
            auto& f = manifest.files[wanted[next]];
            current.emplace(cache, key_of(f), f.size, f.mtime_ns);
            if (f.size == 0)
                if (auto failed = finish()) co_return failed;
        }
        auto ec = co_await detail::read_frame(peer, frame);
        if (auto problem = arrival_problem(whole, idle, ec, limits, "the files")) co_return problem;
        if (frame.type == protocol::message_type::file_data) {
            if (!current || frame.payload.size() > current->missing())
                co_return failure{errc::malformed_message, "file data beyond the sizes of the files asked for"};
            if (auto why = current->write(frame.payload.data(), frame.payload.size()); !why.empty())
                co_return failure{errc::transfer_failed, why};
            received += frame.payload.size();
            if (current->missing() == 0)
                if (auto failed = finish()) co_return failed;
            continue;
        }
        if (frame.type == protocol::message_type::files_end) {
            if (next < wanted.size())
                co_return failure{errc::truncated, fmt::format("the files ended before {} arrived whole",
                                                               manifest.files[wanted[next]].path)};
            co_return std::nullopt;
        }
        co_return failure{errc::unexpected_message, "expected the files asked for"};
    }
}

// Cache entries a restore uses: none is evicted meanwhile.
class pinned_entries {
public:
    explicit pinned_entries(file_cache& cache) : cache_(&cache) {}
    ~pinned_entries() {
        for (auto& key : keys_) cache_->unpin(key);
    }
    pinned_entries(const pinned_entries&) = delete;
    pinned_entries& operator=(const pinned_entries&) = delete;
    // Once per key, and only a key the cache holds: each pin is released once.
    void pin(const cache_key& key) {
        if (!keys_.count(key) && cache_->pin(key)) keys_.insert(key);
    }

private:
    file_cache* cache_;
    std::set<cache_key> keys_;
};

// The image gate against --allow-root and --allow-uid: whether this host
// restores the image, and whom its processes will run as (`who`).
std::optional<failure> check_ids(const options& opts, const std::string& images, image_identity& who) {
    // A user's child gets this agent's bounding set, no smaller one.
    auto bounding = own_bounding_set();
    auto verdict = check_image_dir(images, image_policy{opts.allow_root, opts.allow_uids, bounding.value_or(0)});
    if (auto* refused = std::get_if<image_refusal>(&verdict))
        return failure{errc::not_permitted, refused->message};
    auto& checked = std::get<image_identity>(verdict);
    // Not knowing it, the gate above required nothing: no user's image passes.
    if (checked.uid != 0 && !bounding)
        return failure{errc::not_permitted, "this agent cannot read its own bounding set (CapBnd in /proc/self/status), "
                                            "without which it restores no user's processes"};
    who = checked;
    return std::nullopt;
}

// Where a connection comes from, as --max-pending-per-source counts: its IPv4
// address, or its IPv6 /64, which one host may fill with addresses of its own.
asio::ip::address source_of(const asio::ip::address& address) {
    if (!address.is_v6()) return address;
    auto v6 = address.to_v6();
    if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
    auto bytes = v6.to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return asio::ip::address_v6(bytes);
}

// Why one more connection from `source` is refused before TLS, or empty.
std::string over_pending_limits(const agent_state& agent, const asio::ip::address& source) {
    auto& limits = agent.opts.limits;
    auto& pending = agent.pending;
    if (pending.total >= limits.max_pending_connections)
        return fmt::format("{} connections are authenticating already (--max-pending-connections {})", pending.total,
                           limits.max_pending_connections);
    auto found = pending.by_source.find(source);
    if (found != pending.by_source.end() && found->second >= limits.max_pending_per_source)
        return fmt::format("{} connections from {} are authenticating already (--max-pending-per-source {})",
                           found->second, source.to_string(), limits.max_pending_per_source);
    return {};
}

// A flood must not flood the log as well: one line a second at most.
void log_refusal(pending_peers& pending, const std::string& from, const std::string& why) {
    auto now = std::chrono::steady_clock::now();
    if (now - pending.last_refusal_logged < std::chrono::seconds(1)) {
        ++pending.refusals_unsaid;
        return;
    }
    emit_event("peer_refused", {{"peer", from}, {"text", why}});
    log("refused {}: {}{}", from, why,
        pending.refusals_unsaid ? fmt::format(" ({} more refused since the last such line)", pending.refusals_unsaid)
                                : std::string{});
    pending.last_refusal_logged = now;
    pending.refusals_unsaid = 0;
}

// A connection's place among the pending ones, given back once it is through
// its handshakes or, on any other way out, when it is destroyed.
class pending_slot {
public:
    pending_slot(pending_peers& pending, const asio::ip::address& source) : pending_(&pending), source_(source) {
        ++pending.total;
        ++pending.by_source[source];
    }
    ~pending_slot() { release(); }
    pending_slot(const pending_slot&) = delete;
    pending_slot& operator=(const pending_slot&) = delete;

    void release() {
        if (!pending_) return;
        --pending_->total;
        auto found = pending_->by_source.find(source_);
        if (--found->second == 0) pending_->by_source.erase(found);
        pending_ = nullptr;
    }

private:
    pending_peers* pending_;
    asio::ip::address source_;
};

// Whether this host takes `image` now: its size, and what restores and
// children run here already, against this agent's limits.
std::optional<failure> admission_refusal(const agent_state& agent, const protocol::image_begin& image) {
    auto& limits = agent.opts.limits;
    if (image.total_size > limits.max_image_size)
        return failure{errc::limit_exceeded, fmt::format("an image of {} bytes is larger than this agent accepts "
                                                         "(--max-image-size {} bytes)",
                                                         image.total_size, limits.max_image_size)};
    // The memory that follows a lazy image counts too, refused before
    // anything is restored (and held to it as it comes: lazy_page_server).
    if (image.memory_size > limits.max_image_size - image.total_size)
        return failure{errc::limit_exceeded,
                       fmt::format("an image of {} bytes with {} bytes of memory to follow is larger than this agent "
                                   "accepts (--max-image-size {} bytes)",
                                   image.total_size, image.memory_size, limits.max_image_size)};
    if (agent.receiving >= limits.max_restores)
        return failure{errc::limit_exceeded, fmt::format("busy: {} forks are arriving here already (--max-restores {})",
                                                         agent.receiving, limits.max_restores)};
    if (agent.children >= limits.max_children)
        return failure{errc::limit_exceeded, fmt::format("busy: {} children run here already (--max-children {})",
                                                         agent.children, limits.max_children)};
    // Its memory alone would pass its cgroup's limit: CRIU would be killed midway.
    if (agent.cgroups && limits.child_max_memory && image.total_size + image.memory_size > limits.child_max_memory)
        return failure{errc::limit_exceeded,
                       fmt::format("an image of {} bytes cannot run within the memory each child may use here "
                                   "(--child-max-memory {} bytes)",
                                   image.total_size + image.memory_size, limits.child_max_memory)};
    bool lazy = image.flags & protocol::image_begin::lazy_pages;
    if (lazy && !agent.no_lazy_pages.empty())
        return failure{errc::restore_failed, "this host cannot take lazy pages: " + agent.no_lazy_pages};
    return std::nullopt;
}

// What a sending agent is told: its child runs, who answers its probe, or why not.
using peer_answer = std::variant<protocol::restored, protocol::probe_reply, failure>;

failure too_slow(const limits& limits) {
    return failure{errc::timed_out, fmt::format("no handshake and image header within {} s (--handshake-timeout)",
                                                limits.handshake_timeout.count())};
}

// The sender's handshake and its first message: an image's start, or a probe,
// answered at once (no job, no restore). `answer` is empty when `image` came.
// `pending` and `greeted` are serve_peer's, which awaits handle_peer and so
// this at once: they outlive it.
struct opening {
    std::optional<peer_answer> answer;
    protocol::image_begin image;
};
asio::awaitable<opening> open_conversation(agent_state& agent, std::shared_ptr<peer_connection> connection,
                                           pending_slot& pending, bool& greeted) {
    auto& peer = *connection;
    auto& limits = agent.opts.limits;
    watchdog handshake(peer, limits.handshake_timeout);
    auto refused = co_await expect_handshake(peer, protocol::role::sender,
                                             "only sending agents may connect to this port");
    if (handshake.fired()) co_return opening{too_slow(limits), {}};
    if (refused) co_return opening{*refused, {}};
    pending.release();  // an agent that proved the secret and speaks rfork: no longer a stranger
    auto accept = protocol::encode_handshake(protocol::role::agent);
    if (auto ec = co_await detail::write_bytes(peer, accept)) co_return opening{failure{ec, ec.message()}, {}};
    greeted = true;

    detail::received_frame frame;
    opening opened;
    auto ec = co_await detail::read_frame(peer, frame, protocol::max_control_payload);
    handshake.stop();
    if (handshake.fired()) co_return opening{too_slow(limits), {}};
    if (ec) co_return opening{failure{ec, "no image: " + ec.message()}, {}};
    if (frame.type == protocol::message_type::probe_request) {
        protocol::probe_request probe;
        if (protocol::decode(frame.payload, probe))
            co_return opening{failure{errc::malformed_message, "malformed probe"}, {}};
        co_return opening{protocol::probe_reply{agent.host, protocol::protocol_version, agent.no_lazy_pages}, {}};
    }
    if (frame.type != protocol::message_type::image_begin || protocol::decode(frame.payload, opened.image))
        co_return opening{failure{errc::malformed_message, "expected the start of an image"}, {}};
    // The origin names the child's parent host in logs and `list`: a peer may
    // claim only a name its certificate holds (with a secret, any holder may claim any).
    if (auto why = origin_refused(peer.ssl(), opened.image.origin_host))
        co_return opening{failure{errc::not_permitted, "refused the image: the sending agent " + *why}, {}};
    if (auto not_admitted = admission_refusal(agent, opened.image)) co_return opening{*not_admitted, {}};
    co_return opened;
}

// The files the image names, which come right after its start.
asio::awaitable<std::variant<protocol::file_manifest, failure>> read_manifest(
    std::shared_ptr<peer_connection> connection, limits limits) {
    detail::received_frame frame;
    std::error_code ec;
    {
        watchdog due(*connection, limits.handshake_timeout);
        ec = co_await detail::read_frame(*connection, frame, manifest_limit);
        if (due.fired()) co_return too_slow(limits);
    }
    if (ec) co_return failure{ec, "no file manifest: " + ec.message()};
    protocol::file_manifest manifest;
    if (frame.type != protocol::message_type::file_manifest || protocol::decode(frame.payload, manifest))
        co_return failure{errc::malformed_message, "expected the image's file manifest"};
    co_return manifest;
}

// Where the child finds what this host lacks, in its own mount namespace:
// the placements its namespace init carries out (file_placement.hpp).
std::variant<std::vector<unsigned char>, failure> place_files(const job_dir& job,
                                                              const protocol::file_manifest& manifest,
                                                              const file_decision& files, file_cache& cache) {
    if (files.wanted.empty() && files.cached.empty() && files.missing_dirs.empty()) return std::vector<unsigned char>{};
    auto stage = job / "stage";
    if (::mkdir(stage.c_str(), 0700) != 0)
        return failure{errc::internal_error, fmt::format("cannot make {}: {}", stage, std::strerror(errno))};
    return encode_plan(plan_placements(manifest, files, cache, stage));
}

// Everything after the connection is accepted; the value is the answer to send.
// `pending`, `greeted` and `child` are serve_peer's, which awaits this at
// once: they outlive it, and tell serve_peer what it did even if it throws.
// Longer than most: one straight sequence of checks and steps, each a call,
// in the order the conversation has them.
asio::awaitable<peer_answer> handle_peer(
    agent_state& agent, std::shared_ptr<peer_connection> connection, std::string from,
    pending_slot& pending, bool& greeted, std::shared_ptr<restored_child>& child) {
    auto& peer = *connection;
    auto& limits = agent.opts.limits;
    auto opened = co_await open_conversation(agent, connection, pending, greeted);
    if (opened.answer) co_return std::move(*opened.answer);
    auto& image = opened.image;
    bool lazy = image.flags & protocol::image_begin::lazy_pages;

    // The files the image names, and which of them this host lacks: asked
    // for at once, while the image streams in.
    auto read = co_await read_manifest(connection, limits);
    if (auto* failed = std::get_if<failure>(&read)) co_return *failed;
    auto& manifest = std::get<protocol::file_manifest>(read);
    auto files = decide_files(manifest, *agent.files, agent.own_files, file_limits{limits.max_file_size});
    if (files.refusal) co_return failure{errc::file_unavailable, *files.refusal};
    pinned_entries pinned(*agent.files);
    for (auto i : files.cached) pinned.pin(key_of(manifest.files[i]));
    protocol::file_request request{files.wanted};
    if (auto failed = co_await detail::write_message(peer, request)) co_return failure{failed, failed.message()};
    emit_event("image_receiving", {{"peer", from}, {"origin", image.origin_host}, {"origin_pid", image.pid},
                                   {"bytes", image.total_size}, {"lazy", lazy ? 1 : 0}});
    log("receiving an image of {} bytes from {} (pid {} on {}){}", image.total_size, from, image.pid,
        image.origin_host, lazy ? ", its memory to follow" : "");
    ++agent.receiving;
    child_slot slot(agent.children);
    struct release {
        unsigned& count;
        ~release() { --count; }
    } receiving{agent.receiving};

    auto id = new_child_id(agent);
    auto job = agent.make_job_dir(id);
    auto images = job / "images";
    std::filesystem::create_directory(images);
    if (auto failure = co_await receive_files(connection, images, limits)) co_return *failure;
    std::uint64_t file_bytes = 0;
    if (!files.wanted.empty()) {
        auto failed = co_await receive_wanted_files(peer, manifest, files.wanted, *agent.files, limits, file_bytes);
        if (failed) co_return *failed;
        for (auto i : files.wanted) pinned.pin(key_of(manifest.files[i]));
    }
    emit_event("child_files", {{"id", id}, {"host", files.host_own}, {"cached", files.cached.size()},
                               {"received", files.wanted.size()}, {"bytes", file_bytes}});
    log("files for child {}: host={} cached={} received={} bytes={}", id, files.host_own, files.cached.size(),
        files.wanted.size(), file_bytes);
    if (!lazy) log_image_complete(id, image.total_size);
    image_identity who;
    if (auto not_allowed = check_ids(agent.opts, images, who)) co_return *not_allowed;

    // Root's child is restored by root's CRIU; any other by CRIU as that user.
    std::optional<run_as> as;
    if (who.uid != 0) as = run_as{who.uid, who.gid, who.groups, 0};
    auto placed = place_files(job, manifest, files, *agent.files);
    if (auto* failed = std::get_if<failure>(&placed)) co_return *failed;
    auto placements = std::move(std::get<std::vector<unsigned char>>(placed));
    auto outcome = co_await restore_child(agent, image, id, std::move(job), connection, as, std::move(slot),
                                           std::move(placements));
    child = outcome.child;  // with lazy pages, also after a failure: it reads the connection
    if (outcome.ec) co_return failure{outcome.ec, outcome.message};
    emit_event("child_restored", {{"id", id}, {"pid", outcome.pid}, {"origin", image.origin_host},
                                  {"origin_pid", image.pid}, {"peer", from}});
    log("child {} restored: pid {} from {} (origin pid {}, from {})", id, outcome.pid, image.origin_host, image.pid,
        from);
    co_return protocol::restored{id, agent.host, outcome.pid};
}

// After a failure, the sender may still be sending its image: the rest is
// taken, so that it reads our answer instead of a reset connection. Bounded
// in time (one --idle-timeout in all, not per read: a trickle must not hold
// the connection) and in bytes (--max-image-size).
asio::awaitable<void> drain(std::shared_ptr<peer_connection> peer, limits limits) {
    peer->shutdown_send();
    watchdog bound(*peer, limits.idle_timeout);
    std::vector<unsigned char> sink(64 * 1024);
    for (std::uint64_t taken = 0; taken <= limits.max_image_size && !bound.fired();) {
        auto [ec, n] = co_await peer->async_read_some(asio::buffer(sink), detail::as_tuple_awaitable);
        if (ec) break;
        taken += n;
    }
    peer->close();
}

}  // namespace

// One peer's connection, from accept to close: admission, TLS, the
// conversation, the answer, and what follows it (a child served, or the rest
// of a refused image drained). Kept whole so the order of these is in one place.
asio::awaitable<void> serve_peer(agent_state& agent, asio::ip::tcp::socket connection) {
    std::error_code ignored;
    auto remote = connection.remote_endpoint(ignored);
    std::string from = fmt::format("{}:{}", remote.address().to_string(), remote.port());
    auto source = source_of(remote.address());
    if (auto over = over_pending_limits(agent, source); !over.empty()) {
        log_refusal(agent.pending, from, "before TLS: " + over);
        // A reset, not a close: no TIME_WAIT kept here for each refused connection.
        connection.set_option(asio::socket_base::linger(true, 0), ignored);
        connection.close(ignored);
        co_return;
    }
    pending_slot pending(agent.pending, source);
    auto peer = std::make_shared<peer_connection>(connection.get_executor());
    peer->tcp() = std::move(connection);
    peer->prepare_tcp(agent.opts.limits.idle_timeout);
    if (agent.tls) {
        // Only a peer that holds the shared secret gets further than this.
        peer->use_tls(*agent.tls);
        watchdog guard(*peer, agent.opts.limits.handshake_timeout);
        auto [ec] = co_await peer->async_handshake(asio::ssl::stream_base::server, detail::as_tuple_awaitable);
        if (ec) {
            // Anyone can cause this line: rate-limited like the refusals above.
            log_refusal(agent.pending, from,
                        fmt::format("no TLS with {} ({})",
                                    agent.opts.cert.empty() ? "the shared secret" : "a certificate of this agent's authority",
                                    guard.fired() ? "timed out" : ec.message()));
            peer->close();
            co_return;
        }
    }

    bool greeted = false;  // whether our handshake went out already
    std::shared_ptr<restored_child> child;
    peer_answer outcome;
    try {
        outcome = co_await handle_peer(agent, peer, from, pending, greeted, child);
    } catch (const std::exception& e) {
        outcome = failure{errc::internal_error, e.what()};
    }
    // Our handshake goes first if it has not gone out yet.
    auto reply = [greeted](const auto& message) { return greeted ? protocol::encode(message) : handshake_and(message); };
    detail::bytes answer;
    if (auto* restored = std::get_if<protocol::restored>(&outcome)) {
        answer = reply(*restored);
    } else if (auto* probe = std::get_if<protocol::probe_reply>(&outcome)) {
        emit_event("probe_answered", {{"peer", from}});
        log("answered a probe from {}", from);
        answer = reply(*probe);
    } else {
        auto& f = std::get<failure>(outcome);
        if (f.code == asio::error::eof && !greeted) co_return;  // connected and left: nothing to say
        emit_event(greeted ? "restore_failed" : "peer_refused",
                   {{"peer", from}, {"code", f.code.value()}, {"text", f.text}});
        log("{} from {}: {}", greeted ? "fork failed" : "refused", from, f.text);
        answer = reply(protocol::error_message{f.code, f.text});  // bare: the library adds "rfork: "
    }
    co_await peer->send(answer);  // lazy pages may be flowing already
    if (child && std::holds_alternative<protocol::restored>(outcome)) {
        co_await serve_child(agent, child, peer);
    } else if (child) {
        // A failed lazy restore: its reader takes the rest of the sender's frames.
        peer->shutdown_send();
    } else if (greeted) {
        co_await drain(peer, agent.opts.limits);
        emit_event("connection_drained", {{"peer", from}});
        log("closed the connection from {}", from);
    }
}

}  // namespace rfork::agent
