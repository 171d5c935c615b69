// Every option of the agent, declared once on a CLI11 App: its name, the form
// of its value, its help, and where the value goes. main adds the subcommands
// beside them; parse_options (options.hpp) and config files use them alone.
#pragma once

#include "common/options.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace rfork::agent {

// Options refused with more than CLI11 says: a config file's problems, with
// the command that fixes them. Thrown through CLI11's parse, which passes
// exceptions of its own kind only.
struct options_refused : std::runtime_error {
    explicit options_refused(options_error e) : std::runtime_error(e.what), error(std::move(e)) {}
    options_error error;
};

class agent_command_line {
public:
    // Declares the options on `app`. Each one writes its value the moment it
    // is parsed, so the last one given wins, and a --config FILE's options
    // land where it stands: later options override them.
    explicit agent_command_line(CLI::App& app);
    agent_command_line(const agent_command_line&) = delete;  // the App's callbacks hold `this`
    agent_command_line& operator=(const agent_command_line&) = delete;

    // After app.parse(): the options, checked as a whole, or nullopt and why not.
    std::optional<options> finish(options_error& error, bool listen_required) const;
    // Whether any agent option was given (beside a subcommand, none may be).
    bool any_given() const;
    // What was parsed so far, unchecked.
    const options& values() const { return values_; }

private:
    void read_config(const std::string& path);

    CLI::App& app_;
    options values_;
    bool have_listen_ = false;
};

// Parses `args` (without the program's name) with `app`; CLI11 wants them last first.
void parse_in_order(CLI::App& app, std::vector<std::string> args);

}  // namespace rfork::agent
