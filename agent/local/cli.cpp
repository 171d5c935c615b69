#include "local/cli.hpp"

#include "common/options.hpp"

#include <rfork/detail/local_request.hpp>
#include <rfork/options.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include <fmt/core.h>

#include <CLI/CLI.hpp>

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

// The local agent's socket, as its own --socket is checked.
CLI::Option* add_socket_option(CLI::App& command, std::string& into) {
    into = agent_socket_from_environment();
    auto check = [](const std::string& path) { return socket_path_problem(path); };
    return command.add_option("--socket", into, "the local agent's socket (default $RFORK_AGENT_SOCKET\nor " +
                                                   std::string(default_agent_socket) + ")")
        ->type_name("PATH")
        ->check(CLI::Validator(check, ""));
}

}  // namespace

std::optional<int> parse_signal(std::string_view text) {
    int number = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (ec == std::errc{} && end == text.data() + text.size())
        return number >= 1 && number <= 64 ? std::optional(number) : std::nullopt;
    auto name = text.starts_with("SIG") ? text.substr(3) : text;
    for (int s = 1; s < 32; ++s)
        if (const char* abbrev = ::sigabbrev_np(s); abbrev && name == abbrev) return s;
    return std::nullopt;
}

CLI::App* add_list_command(CLI::App& app, list_command& into) {
    auto* command = app.add_subcommand("list", "the children running on this host");
    add_socket_option(*command, into.socket);
    return command;
}

CLI::App* add_kill_command(CLI::App& app, kill_command& into) {
    auto* command = app.add_subcommand("kill", "send a signal to a child running on this host");
    command->add_option("ID", into.id, "the child, as rfork-agent list names it")->required();
    auto signal = [&into](const std::string& text) {
        auto parsed = parse_signal(text);
        if (!parsed) throw CLI::ValidationError("unknown signal '" + text + "'");
        into.signal = *parsed;
    };
    command->add_option_function<std::string>("--signal", signal, "the signal, by number or name (default TERM)")
        ->type_name("N|NAME");
    add_socket_option(*command, into.socket);
    return command;
}

int run_list(const list_command& command) {
    protocol::list_request request;
    auto answer = ask(command.socket, protocol::encode(request));
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

int run_kill(const kill_command& command) {
    protocol::kill_request request{command.id, static_cast<std::uint32_t>(command.signal)};
    auto answer = ask(command.socket, protocol::encode(request));
    if (!answer.ec && answer.frame.type != protocol::message_type::kill_reply)
        answer = {errc::unexpected_message, "rfork: unexpected answer from the agent", {}};
    if (answer.ec) {
        fmt::print(stderr, "rfork-agent kill: {}\n", answer.message);
        return 1;
    }
    return 0;
}

}  // namespace rfork::agent
