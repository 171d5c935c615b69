// `rfork-agent list` and `rfork-agent kill ID`: ask this host's agent about
// the children running here.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace CLI {
class App;
}

namespace rfork::agent {

struct list_command {
    std::string socket;  // the local agent's
};

struct kill_command {
    std::string socket;
    std::string id;
    int signal = 15;  // SIGTERM
};

// Each declares its subcommand on `app`, its options writing into `into`
// (which must outlive the parse), and returns it: main runs the one given.
CLI::App* add_list_command(CLI::App& app, list_command& into);
CLI::App* add_kill_command(CLI::App& app, kill_command& into);

// Return the process exit code.
int run_list(const list_command& command);
int run_kill(const kill_command& command);

// "15", "TERM" and "SIGTERM" alike; nullopt for anything else.
std::optional<int> parse_signal(std::string_view text);

}  // namespace rfork::agent
