#include "local/cli.hpp"

#include <rfork/detail/local_request.hpp>
#include <rfork/options.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include <fmt/core.h>

#include <charconv>
#include <csignal>
#include <cstring>
#include <optional>

namespace rfork::agent {

namespace {

// Sends one request to the local agent and waits for its answer.
detail::local_answer ask(const std::string& socket, const detail::bytes& request) {
    asio::io_context io;
    auto answer = asio::co_spawn(io, detail::local_request(socket, request), asio::use_future);
    io.run();
    return answer.get();
}

std::string format_age(std::uint64_t ms) {
    auto s = ms / 1000;
    if (s < 60) return fmt::format("{}.{}s", s, ms % 1000 / 100);
    if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
    return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
}

// Accepts "15", "TERM" and "SIGTERM".
std::optional<int> parse_signal(const std::string& text) {
    int number = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (ec == std::errc{} && end == text.data() + text.size()) return number >= 1 && number <= 64 ? std::optional(number) : std::nullopt;
    std::string name = text.starts_with("SIG") ? text.substr(3) : text;
    for (int s = 1; s < 32; ++s)
        if (const char* abbrev = ::sigabbrev_np(s); abbrev && name == abbrev) return s;
    return std::nullopt;
}

}  // namespace

int run_list(const std::vector<std::string>& args) {
    std::string socket = agent_socket_from_environment();
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--socket" && i + 1 < args.size()) {
            socket = args[++i];
        } else {
            fmt::print(stderr, "usage: rfork-agent list [--socket PATH]\n");
            return 2;
        }
    }
    protocol::list_request request;
    auto answer = ask(socket, protocol::encode(request));
    protocol::list_reply reply;
    if (!answer.ec && (answer.frame.type != protocol::message_type::list_reply ||
                       protocol::decode(answer.frame.payload, reply)))
        answer = {errc::unexpected_message, "rfork: unexpected answer from the agent", {}};
    if (answer.ec) {
        fmt::print(stderr, "rfork-agent list: {}\n", answer.message);
        return 1;
    }
    fmt::print("{:<10} {:<20} {:>8} {:<10} {:>8}\n", "ID", "ORIGIN", "PID", "STATE", "AGE");
    for (auto& c : reply.children)
        fmt::print("{:<10} {:<20} {:>8} {:<10} {:>8}\n", c.id, c.origin_host, c.pid, c.state, format_age(c.age_ms));
    return 0;
}

int run_kill(const std::vector<std::string>& args) {
    std::string socket = agent_socket_from_environment();
    std::string id;
    int signal = SIGTERM;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--socket" && i + 1 < args.size()) {
            socket = args[++i];
        } else if (args[i] == "--signal" && i + 1 < args.size()) {
            auto parsed = parse_signal(args[++i]);
            if (!parsed) {
                fmt::print(stderr, "rfork-agent kill: unknown signal '{}'\n", args[i]);
                return 2;
            }
            signal = *parsed;
        } else if (id.empty() && !args[i].starts_with("-")) {
            id = args[i];
        } else {
            id.clear();
            break;
        }
    }
    if (id.empty()) {
        fmt::print(stderr, "usage: rfork-agent kill ID [--signal N|NAME] [--socket PATH]\n");
        return 2;
    }
    protocol::kill_request request{id, static_cast<std::uint32_t>(signal)};
    auto answer = ask(socket, protocol::encode(request));
    if (!answer.ec && answer.frame.type != protocol::message_type::kill_reply)
        answer = {errc::unexpected_message, "rfork: unexpected answer from the agent", {}};
    if (answer.ec) {
        fmt::print(stderr, "rfork-agent kill: {}\n", answer.message);
        return 1;
    }
    return 0;
}

}  // namespace rfork::agent
