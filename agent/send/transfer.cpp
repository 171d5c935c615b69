#include "send/transfer.hpp"

#include "common/events.hpp"
#include "common/log.hpp"
#include "common/watchdog.hpp"
#include "peer/deadline.hpp"
#include "send/fork_plan.hpp"

#include <rfork/detail/frame_io.hpp>

#include <fmt/core.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace rfork::agent {

namespace {

constexpr std::size_t chunk_size = 1 << 20;

// Streams the image's files as image_file + image_data frames, then image_end.
asio::awaitable<std::error_code> send_image_files(std::shared_ptr<peer_connection> peer,
                                                  std::vector<image_file> files) {
    detail::bytes chunk(chunk_size);
    for (auto& file : files) {
        protocol::image_file header{file.name, file.size};
        if (auto ec = co_await detail::write_message(*peer, header)) co_return ec;
        for (std::uint64_t left = header.size; left > 0;) {
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk_size));
            auto got = ::read(file.fd.get(), chunk.data(), want);
            if (got <= 0) co_return got < 0 ? std::error_code(errno, std::generic_category()) : errc::truncated;
            auto frame = protocol::encode_frame(protocol::message_type::image_data,
                                                std::span(chunk.data(), static_cast<std::size_t>(got)));
            if (auto ec = co_await detail::write_bytes(*peer, frame)) co_return ec;
            left -= static_cast<std::uint64_t>(got);
        }
        file.fd.reset();
    }
    protocol::image_end end;  // named: GCC 12 and temporaries around co_await
    co_return co_await detail::write_message(*peer, end);
}

struct files_sent {
    std::error_code ec;
    std::uint64_t bytes = 0;
};

// The bytes of the files the receiver asked for (file_request), each whole
// and in its order, then files_end; nothing for an empty request. Read from
// the very files described: one that shrank meanwhile stops the fork.
// `files` is the caller's image, which awaits this at once.
asio::awaitable<files_sent> send_wanted_files(std::shared_ptr<peer_connection> peer, const outgoing_files& files,
                                              protocol::file_request request) {
    files_sent sent;
    if (request.wanted.empty()) co_return sent;  // nothing follows an empty request
    detail::bytes chunk(chunk_size);
    // Through send(): with lazy pages, the dump's page server writes on the connection too.
    for (auto i : request.wanted) {
        if (i >= files.fds.size() || !files.fds[i]) co_return files_sent{errc::malformed_message, sent.bytes};
        auto size = files.manifest.files[i].size;
        for (std::uint64_t at = 0; at < size;) {
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(size - at, chunk_size));
            auto got = ::pread(files.fds[i].get(), chunk.data(), want, static_cast<off_t>(at));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0)
                co_return files_sent{got < 0 ? std::error_code(errno, std::generic_category()) : errc::truncated,
                                     sent.bytes};
            auto frame = protocol::encode_frame(protocol::message_type::file_data,
                                                std::span(chunk.data(), static_cast<std::size_t>(got)));
            if (!co_await peer->send(frame)) co_return files_sent{errc::transfer_failed, sent.bytes};
            at += static_cast<std::uint64_t>(got);
            sent.bytes += static_cast<std::uint64_t>(got);
        }
    }
    auto end = protocol::encode(protocol::files_end{});
    if (!co_await peer->send(end)) sent.ec = errc::transfer_failed;
    co_return sent;
}

// What the peer said after the image.
struct answer_read {
    std::error_code sending;  // sending the files it asked for failed
    std::error_code reading;  // reading its answer failed (errc::timed_out once `bound` passed)
    detail::received_frame reply;
};

// Reads until the peer's answer: first its request for files it lacks,
// answered once the image is out; then, with lazy pages, pages flow (the
// stream starts once the files are sent).
// `image` is the caller's, which awaits this at once. `sending` is how
// sending the image failed: the peer may still say why, so it is read.
asio::awaitable<answer_read> read_answer(std::shared_ptr<child_relay> relay, const checkpoint_image& image, int pid,
                                         std::string endpoint, std::chrono::steady_clock::duration bound,
                                         std::error_code sending) {
    answer_read got{sending, {}, {}};
    auto& peer = *relay->peer;
    watchdog answer_due(peer, bound);
    bool files_asked = false;
    for (;;) {
        got.reading = co_await read_frame_within(peer, got.reply, protocol::max_control_payload, answer_due);
        if (got.reading || got.sending) break;
        if (got.reply.type == protocol::message_type::file_request && !files_asked) {
            files_asked = true;
            protocol::file_request asked;
            if (protocol::decode(got.reply.payload, asked)) {
                got.sending = errc::malformed_message;
                break;
            }
            auto sent = co_await send_wanted_files(relay->peer, image.outgoing, asked);
            got.sending = answer_due.timed_out_or(sent.ec);
            if (got.sending) break;
            // The memory follows the files, never among them: the restore
            // that needs it starts once they are there.
            if (relay->pages) start_page_pump(relay);
            if (!asked.wanted.empty()) {
                emit_event("files_sent",
                           {{"pid", pid}, {"endpoint", endpoint}, {"files", asked.wanted.size()}, {"bytes", sent.bytes}});
                log("sent {} files ({} bytes) of pid {} to {}", asked.wanted.size(), sent.bytes, pid, endpoint);
            }
        } else if (relay->pages && page_stream::carries(got.reply.type)) {
            relay->pages->take(got.reply);
        } else {
            break;
        }
    }
    answer_due.stop();
    co_return got;
}

}  // namespace

asio::awaitable<std::variant<protocol::restored, failure>> transfer(agent_state& agent,
                                                                    std::shared_ptr<child_relay> relay,
                                                                    checkpoint_image image, int pid,
                                                                    protocol::fork_request request) {
    auto& peer = *relay->peer;
    std::uint64_t total = 0, file_bytes = 0;  // the image, and all the receiver could ask for
    for (auto& file : image.files) total += file.size;
    for (auto& file : image.outgoing.manifest.files) file_bytes += file.size;
    protocol::image_begin begin{agent.host, static_cast<std::uint32_t>(pid), request.socket_inode, image.stdio, total,
                                image.lazy ? protocol::image_begin::lazy_pages : 0u,
                                relay->pages ? relay->pages->pages_total() * protocol::page_size : 0};
    std::error_code ec = co_await detail::write_message(peer, begin);
    if (!ec) ec = co_await detail::write_message(peer, image.outgoing.manifest);
    if (!ec) ec = co_await send_image_files(relay->peer, std::move(image.files));
    image.job.remove();  // the image is sent or lost: either way it is no longer needed here (a lazy dump's is not here)

    // The answer, or why the peer stopped taking the image (a limit, say).
    // The child's pages flow meanwhile, when they are lazy. A peer that
    // takes the image and says nothing must not hold the caller (or its
    // frozen snapshot) for ever: it gets as long as its own CRIU may take.
    auto& limits = agent.opts.limits;
    auto bound = limits.handshake_timeout + criu_time_bound(limits.idle_timeout, total + file_bytes);
    auto got = co_await read_answer(relay, image, pid, request.endpoint, bound, ec);
    if (got.reading == errc::timed_out || got.sending == errc::timed_out) co_return answer_overdue(request.endpoint, bound);
    auto judged = judge_answer(got.sending, got.reading, got.reply, request.endpoint);
    if (auto* child = std::get_if<protocol::restored>(&judged); child && agent.forked.find(child->child_id))
        co_return failure{errc::unexpected_message, fmt::format("the agent at {} named its child '{}', which is not a "
                                                                "fresh child id",
                                                                request.endpoint, child->child_id)};
    co_return judged;
}

}  // namespace rfork::agent
