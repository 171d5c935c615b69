// The agent's options from a file (--config FILE), one per line:
//
//   # comments and blank lines are ignored
//   listen 0.0.0.0:7000
//   secret-file /etc/rfork/secret
//   allow-root
//
// Each line is a long option without its dashes, then its value if it takes
// one: the rest of the line, trimmed (so a path may hold spaces). It means
// exactly what `--listen 0.0.0.0:7000` means on the command line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rfork::agent {

inline constexpr const char* default_config_file = "/etc/rfork/agent.conf";

// One line of a config file as command-line arguments: {"--listen", "0.0.0.0:7000"}.
struct config_line {
    std::size_t number = 0;
    std::vector<std::string> args;
};

struct config_error {
    std::size_t line = 0;  // 0: the file as a whole
    std::string what;
    std::string fix;  // the command that fixes it, when there is one
};

// Pure: the text of a config file, checked line by line against the agent's options.
std::variant<std::vector<config_line>, config_error> parse_config(std::string_view text);

// The text of `path`, refused unless it is a regular file of root's that
// only root may write: it decides what the agent (root) runs and trusts.
std::variant<std::string, config_error> read_config_file(const std::string& path);

}  // namespace rfork::agent
