// Lazy pages: the sender's stream of a dump's pages (page_stream) and the
// receiver's answers to CRIU's lazy-pages daemon (lazy_page_server), each
// against the other end of its real sockets: this test plays CRIU there, and
// the other agent on a loopback TCP connection.
#include "criu/page_server_iov.hpp"
#include "receive/lazy_page_server.hpp"
#include "send/lazy_ranges.hpp"
#include "send/page_stream.hpp"

#include <rfork/detail/frame_io.hpp>
#include <rfork/protocol.hpp>

#include <pagemap.pb-c.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/read.hpp>
#include <asio/use_future.hpp>
#include <asio/write.hpp>

#include <doctest/doctest.h>

#include <sys/socket.h>

#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <vector>

using namespace rfork;
using namespace rfork::agent;
using detail::as_tuple_awaitable;

namespace {

constexpr auto bound = std::chrono::seconds(20);

// What this test's pages hold: a byte that names process, page and offset.
unsigned char pattern(std::uint64_t process, std::uint64_t address, std::size_t at) {
    return static_cast<unsigned char>(process * 31 + address / protocol::page_size * 7 + at);
}

std::vector<unsigned char> pages_of(std::uint64_t process, std::uint64_t address, std::uint64_t pages) {
    std::vector<unsigned char> out(pages * protocol::page_size);
    for (std::uint64_t p = 0; p < pages; ++p)
        for (std::size_t i = 0; i < protocol::page_size; ++i)
            out[p * protocol::page_size + i] = pattern(process, address + p * protocol::page_size, i);
    return out;
}

detail::received_frame push_frame(std::uint64_t process, std::uint64_t address, std::uint64_t pages) {
    detail::received_frame f;
    f.type = protocol::message_type::page_push;
    f.payload.resize(protocol::page_push_head::size);
    protocol::put_page_push_head(f.payload, {process, address});
    auto data = pages_of(process, address, pages);
    f.payload.insert(f.payload.end(), data.begin(), data.end());
    return f;
}

// Two connected agents' ends: ours (a peer_connection, no TLS) and the far one.
struct agents {
    explicit agents(asio::io_context& io) : ours(std::make_shared<agent::peer_connection>(io.get_executor())), far(io) {
        asio::ip::tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
        ours->tcp().connect(acceptor.local_endpoint());
        acceptor.accept(far);
    }
    std::shared_ptr<agent::peer_connection> ours;
    asio::ip::tcp::socket far;
};

// A socket pair: the agent's end (as an fd to hand over) and CRIU's.
struct criu_pair {
    explicit criu_pair(asio::io_context& io) : criu(io) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        agent_end = unique_fd(sv[0]);
        criu.assign(asio::local::stream_protocol(), sv[1]);
    }
    unique_fd agent_end;
    asio::local::stream_protocol::socket criu;
};

// Runs `io` until `f` is ready (bounded) and returns its value. (Asio
// sets a use_future result from its own thread: waited for, never polled.)
template <typename T>
T finish(asio::io_context& io, std::future<T>& f) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (f.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < deadline) {
        io.restart();
        io.run_one_for(std::chrono::milliseconds(100));
    }
    REQUIRE(f.wait_for(std::chrono::seconds(1)) == std::future_status::ready);
    return f.get();
}

std::vector<unsigned char> pagemap_image(const std::vector<std::tuple<std::uint64_t, std::uint64_t, std::uint32_t>>& entries) {
    std::vector<unsigned char> out;
    auto u32 = [&](std::uint32_t v) {
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
    };
    u32(0x54564319), u32(0x56084025);
    auto append = [&](const ProtobufCMessage* m) {
        std::vector<unsigned char> packed(protobuf_c_message_get_packed_size(m));
        protobuf_c_message_pack(m, packed.data());
        u32(static_cast<std::uint32_t>(packed.size()));
        out.insert(out.end(), packed.begin(), packed.end());
    };
    PagemapHead head = PAGEMAP_HEAD__INIT;
    head.pages_id = 1;
    append(&head.base);
    for (auto [address, pages, flags] : entries) {
        PagemapEntry e = PAGEMAP_ENTRY__INIT;
        e.vaddr = address;
        e.compat_nr_pages = static_cast<std::uint32_t>(pages);
        e.has_nr_pages = true;
        e.nr_pages = pages;
        e.has_flags = true;
        e.flags = flags;
        append(&e.base);
    }
    return out;
}

// A lazy_page_server serving, between the test's daemon end and the test's
// far agent.
struct serving_daemon {
    asio::io_context io;
    agents link{io};
    criu_pair daemon{io};
    std::shared_ptr<lazy_page_server> server = std::make_shared<lazy_page_server>(
        io.get_executor(), std::move(daemon.agent_end), 1 << 30, 1 << 20);
    std::future<void> served = asio::co_spawn(io, lazy_page_server::serve(server, link.ours), asio::use_future);
};

}  // namespace

TEST_SUITE("unit.lazy_pages") {
    TEST_CASE("page frames decode only as runs of whole aligned pages") {
        auto f = push_frame(7, 0x10000, 2);
        protocol::page_push_head head;
        std::uint64_t pages = 0;
        CHECK_FALSE(protocol::decode_page_push(f.payload, head, pages));
        CHECK(head.process == 7);
        CHECK(head.address == 0x10000);
        CHECK(pages == 2);
        auto cut = f.payload;
        cut.pop_back();
        CHECK(protocol::decode_page_push(cut, head, pages));  // not whole pages
        auto bare = std::vector<unsigned char>(f.payload.begin(), f.payload.begin() + protocol::page_push_head::size);
        CHECK(protocol::decode_page_push(bare, head, pages));  // no page at all
        auto unaligned = push_frame(7, 0x10001, 1);
        CHECK(protocol::decode_page_push(unaligned.payload, head, pages));
        auto wrapping = push_frame(7, ~std::uint64_t{0} - protocol::page_size + 1, 1);
        CHECK(protocol::decode_page_push(wrapping.payload, head, pages));

        protocol::page_want want;
        for (auto [address, pages_wanted, ok] :
             {std::tuple{0x2000ull, 3ull, true}, {0x2001ull, 3ull, false}, {0x2000ull, 0ull, false},
              {0x2000ull, protocol::max_want_pages + 1, false}}) {
            detail::bytes payload;
            detail::wire_writer w(payload);
            protocol::page_want{1, address, pages_wanted}.encode(w);
            CHECK((protocol::decode(payload, want) == std::error_code()) == ok);
        }
    }

    TEST_CASE("a frame sealed in place reads as the frame encode_frame makes") {
        detail::bytes payload = {1, 2, 3, 4, 5};
        auto made = protocol::encode_frame(protocol::message_type::page_push, payload);
        detail::bytes in_place(protocol::frame_header_size);
        in_place.insert(in_place.end(), payload.begin(), payload.end());
        protocol::seal_frame(protocol::message_type::page_push, in_place);
        CHECK(in_place == made);
    }

    TEST_CASE("the lazy runs of a pagemap are its entries marked lazy in its order") {
        auto image = pagemap_image({{0x1000, 2, 2 /* lazy */}, {0x5000, 1, 4 /* present */}, {0x8000, 3, 2 | 4}});
        auto ranges = lazy_ranges_of(image, 42);
        REQUIRE(std::holds_alternative<std::vector<lazy_range>>(ranges));
        auto& got = std::get<std::vector<lazy_range>>(ranges);
        REQUIRE(got.size() == 2);
        CHECK(got[0] == lazy_range{42, 0x1000, 2});
        CHECK(got[1] == lazy_range{42, 0x8000, 3});

        auto truncated = image;
        truncated.pop_back();
        CHECK(std::holds_alternative<std::string>(lazy_ranges_of(truncated, 42)));
        auto unaligned = pagemap_image({{0x1001, 2, 2}});
        CHECK(std::holds_alternative<std::string>(lazy_ranges_of(unaligned, 42)));
    }

    TEST_CASE("the stream sends every lazy page once and wanted pages first and again") {
        asio::io_context io;
        agents link(io);
        criu_pair criu(io);
        std::vector<lazy_range> ranges = {{7, 0x10000, 300}, {7, 0x400000, 2}, {9, 0x10000, 1}};
        auto stream = std::make_shared<page_stream>(io.get_executor(), std::move(criu.agent_end), ranges);
        CHECK(stream->pages_total() == 303);
        stream->go_ahead();  // the child runs: all of its memory goes

        // Plays the dump's CRIU: answers each request in order, with at most
        // 200 pages (CRIU may answer with fewer than asked), until the end.
        std::vector<page_server_iov> requests;
        auto play_criu = [&]() -> asio::awaitable<void> {
            for (;;) {
                page_server::wire raw;
                auto [ec, n] = co_await asio::async_read(criu.criu, asio::buffer(raw), as_tuple_awaitable);
                if (ec) co_return;
                auto asked = page_server::decode(raw);
                requests.push_back(asked);
                auto pages = std::min<std::uint64_t>(asked.pages, 200);
                auto head = page_server::encode(page_server::answer(asked, pages));
                auto data = pages_of(asked.process, asked.address, pages);
                co_await asio::async_write(criu.criu, asio::buffer(head), as_tuple_awaitable);
                co_await asio::async_write(criu.criu, asio::buffer(data), as_tuple_awaitable);
            }
        };
        // Plays the receiver: takes pushes until every page is here, wants
        // one page again and waits for it, then says it has them all.
        std::map<std::pair<std::uint64_t, std::uint64_t>, int> seen;
        bool bad_content = false;
        auto play_receiver = [&]() -> asio::awaitable<int> {
            detail::received_frame f;
            auto take = [&]() -> asio::awaitable<bool> {
                if (co_await detail::read_frame(link.far, f)) co_return false;
                protocol::page_push_head head;
                std::uint64_t pages = 0;
                if (f.type != protocol::message_type::page_push || protocol::decode_page_push(f.payload, head, pages))
                    co_return false;
                auto expected = pages_of(head.process, head.address, pages);
                if (!std::equal(expected.begin(), expected.end(), f.payload.begin() + protocol::page_push_head::size))
                    bad_content = true;
                for (std::uint64_t p = 0; p < pages; ++p) ++seen[{head.process, head.address + p * protocol::page_size}];
                co_return true;
            };
            while (seen.size() < 303)
                if (!co_await take()) co_return -1;
            auto want = protocol::encode(protocol::page_want{7, 0x10000 + 5 * protocol::page_size, 1});
            co_await asio::async_write(link.far, asio::buffer(want), as_tuple_awaitable);
            if (!co_await take()) co_return -2;
            auto end = protocol::encode_frame(protocol::message_type::page_end, {});
            co_await asio::async_write(link.far, asio::buffer(end), as_tuple_awaitable);
            co_return 0;
        };
        // The agent's side: the receiver's frames reach the stream.
        auto relay_wants = [&]() -> asio::awaitable<void> {
            detail::received_frame f;
            while (!co_await detail::read_frame(*link.ours, f))
                if (page_stream::carries(f.type)) stream->take(f);
        };
        auto criu_done = asio::co_spawn(io, play_criu(), asio::use_future);
        auto sent = asio::co_spawn(io, page_stream::run(stream, link.ours), asio::use_future);
        auto receiver = asio::co_spawn(io, play_receiver(), asio::use_future);
        asio::co_spawn(io, relay_wants(), [](std::exception_ptr) {});
        CHECK(finish(io, receiver) == 0);
        finish(io, sent);
        finish(io, criu_done);  // CRIU read the end of its conversation
        CHECK_FALSE(bad_content);
        CHECK(seen.size() == 303);
        CHECK(seen[{7, 0x10000 + 5 * protocol::page_size}] == 2);  // the wanted one, again
        CHECK(seen[{7, 0x10000}] == 1);
        CHECK_FALSE(stream->cut_short());
        for (auto& r : requests) CHECK(r.pages <= 256);  // within one of CRIU's pipes
    }

    TEST_CASE("a want for pages the dump does not have ends the stream and tells the receiver") {
        asio::io_context io;
        agents link(io);
        criu_pair criu(io);
        auto stream = std::make_shared<page_stream>(io.get_executor(), std::move(criu.agent_end),
                                                    std::vector<lazy_range>{{7, 0x10000, 1}});
        protocol::page_want outside{7, 0x900000, 1};
        detail::received_frame want{protocol::message_type::page_want, {}};
        detail::wire_writer w(want.payload);
        outside.encode(w);
        stream->take(want);
        auto sent = asio::co_spawn(io, page_stream::run(stream, link.ours), asio::use_future);
        auto end = asio::co_spawn(
            io,
            [&]() -> asio::awaitable<protocol::message_type> {
                detail::received_frame f;
                if (co_await detail::read_frame(link.far, f)) co_return protocol::message_type::error;
                co_return f.type;
            },
            asio::use_future);
        CHECK(finish(io, end) == protocol::message_type::page_end);
    }

    TEST_CASE("the daemon's requests are answered from pushed pages and what is missing is wanted") {
        serving_daemon s;
        auto& [io, link, daemon, server, served] = s;
        auto play = [&]() -> asio::awaitable<int> {
            // Two pages here before the daemon asks, two not.
            auto early = push_frame(7, 0x10000, 2);
            server->take(early);
            auto request = page_server::encode(page_server::request(7, 0x10000, 4));
            co_await asio::async_write(daemon.criu, asio::buffer(request), as_tuple_awaitable);
            detail::received_frame f;
            if (co_await detail::read_frame(link.far, f)) co_return 1;
            protocol::page_want want;
            if (f.type != protocol::message_type::page_want || protocol::decode(f.payload, want)) co_return 2;
            if (want.process != 7 || want.address != 0x12000 || want.pages != 2) co_return 3;
            auto late = push_frame(7, 0x12000, 2);
            server->take(late);
            page_server::wire raw;
            auto [ec, n] = co_await asio::async_read(daemon.criu, asio::buffer(raw), as_tuple_awaitable);
            if (ec || !page_server::answers(page_server::decode(raw), page_server::request(7, 0x10000, 4))) co_return 4;
            if (page_server::decode(raw).pages != 4) co_return 5;
            std::vector<unsigned char> data(4 * protocol::page_size);
            auto [ec2, n2] = co_await asio::async_read(daemon.criu, asio::buffer(data), as_tuple_awaitable);
            if (ec2 || data != pages_of(7, 0x10000, 4)) co_return 6;
            if (server->pages_held() != 0) co_return 7;  // given to the daemon: let go
            // The daemon ends: the sender hears that no more pages are needed.
            daemon.criu.close();
            if (co_await detail::read_frame(link.far, f) || f.type != protocol::message_type::page_end) co_return 8;
            co_return 0;
        };
        auto result = asio::co_spawn(io, play(), asio::use_future);
        CHECK(finish(io, result) == 0);
        finish(io, served);
    }

    TEST_CASE("pages beyond either bound or malformed cut the daemon off") {
        asio::io_context io;
        agents link(io);
        enum class way { beyond_all, beyond_held, malformed };
        for (auto how : {way::beyond_all, way::beyond_held, way::malformed}) {
            CAPTURE(int(how));
            criu_pair daemon(io);
            // Pages in all (8 where that is the bound), and held at once (4).
            std::uint64_t all = how == way::beyond_all ? 8 * protocol::page_size : 1 << 30;
            std::uint64_t held = how == way::beyond_held ? 4 * protocol::page_size + 1000 : 1 << 30;
            auto server = std::make_shared<lazy_page_server>(io.get_executor(), std::move(daemon.agent_end), all, held);
            auto first = push_frame(7, 0x10000, how == way::beyond_held ? 4 : 8);
            CHECK(server->take(first));
            auto again = push_frame(7, 0x10000, 1);  // a page held already counts once
            if (how == way::beyond_held) CHECK(server->take(again));
            auto more = push_frame(7, 0x20000, 1);
            if (how == way::malformed) more.payload.pop_back();
            CHECK(server->take(more) == (how == way::malformed));  // false at a bound
            CHECK(server->pages_held() == 0);
            auto eof = asio::co_spawn(
                io,
                [&]() -> asio::awaitable<bool> {
                    std::array<unsigned char, 1> byte{};
                    auto [ec, n] = co_await asio::async_read(daemon.criu, asio::buffer(byte), as_tuple_awaitable);
                    co_return ec == asio::error::eof;
                },
                asio::use_future);
            CHECK(finish(io, eof));
        }
    }

    TEST_CASE("a request that can no longer be answered ends the daemon's conversation") {
        serving_daemon s;
        auto& [io, link, daemon, server, served] = s;
        auto play = [&]() -> asio::awaitable<bool> {
            auto request = page_server::encode(page_server::request(7, 0x10000, 1));
            co_await asio::async_write(daemon.criu, asio::buffer(request), as_tuple_awaitable);
            detail::received_frame f;
            co_await detail::read_frame(link.far, f);  // the want
            detail::received_frame end{protocol::message_type::page_end, {}};
            server->take(end);  // the sender has no more
            std::array<unsigned char, 1> byte{};
            auto [ec, n] = co_await asio::async_read(daemon.criu, asio::buffer(byte), as_tuple_awaitable);
            co_return ec == asio::error::eof;
        };
        auto result = asio::co_spawn(io, play(), asio::use_future);
        CHECK(finish(io, result));
        finish(io, served);
    }
}
