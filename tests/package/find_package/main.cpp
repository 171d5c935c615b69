// A program that uses rfork as any user would: one include, one target.
// Both packaging tests build this file; it must compile, link and run.
#include <rfork/protocol.hpp>  // the wire format: not in the umbrella header
#include <rfork/rfork.hpp>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include <cstdio>
#include <string_view>
#include <system_error>

// Never called: makes the compiler instantiate fork_remote's coroutines, all
// the way down to the socket code, with the consumer's flags.
asio::awaitable<int> fork_once(asio::io_context& ctx) {
    rfork::fork_result r = co_await rfork::fork_remote(ctx, "x:1");
    std::error_code ec;
    rfork::fork_result again = co_await rfork::fork_remote(ctx, "x:1", ec);
    if (r.is_parent()) co_await r.kill();
    co_return r.is_child() || again.is_child() ? 1 : co_await r.wait();
}

// Likewise for the completion-token forms.
void fork_with_callback(asio::io_context& ctx) {
    rfork::fork_options options;
    rfork::async_fork_remote(ctx.get_executor(), "x:1", options, [&ctx](std::error_code, rfork::fork_result r) {
        r.async_kill(ctx, 15, [](std::error_code) {});
        r.async_wait(ctx, [](std::error_code, int) {});
    });
}

namespace {

int fail(const char* what) {
    std::fprintf(stderr, "rfork consumer: %s\n", what);
    return 1;
}

}  // namespace

int main() {
    // The functions above are linked in, not only compiled.
    auto* volatile instantiated = &fork_once;
    auto* volatile instantiated_callback = &fork_with_callback;
    if (instantiated == nullptr || instantiated_callback == nullptr) return fail("coroutines not linked");

    auto ep = rfork::endpoint::parse("[::1]:7000");
    if (!ep || ep->host != "::1" || ep->port != 7000) return fail("endpoint::parse([::1]:7000)");
    if (ep->to_string() != "[::1]:7000") return fail("endpoint::to_string");
    if (rfork::endpoint::parse("no-port")) return fail("endpoint::parse accepted no-port");

    std::error_code ec = rfork::make_error_code(rfork::errc::bad_endpoint);
    if (ec != rfork::errc::bad_endpoint || std::string_view(ec.category().name()) != "rfork")
        return fail("make_error_code");
    if (ec.message() == rfork::category().message(0)) return fail("error message");

    auto hello = rfork::protocol::encode_handshake(rfork::protocol::role::program);
    rfork::protocol::handshake peer;
    peer.who = rfork::protocol::role::agent;
    if (rfork::protocol::decode_handshake(hello, peer) || peer.who != rfork::protocol::role::program)
        return fail("handshake round trip");

    std::puts("rfork consumer: ok");
    return 0;
}
