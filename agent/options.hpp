// The agent's command line.
#pragma once

#include <rfork/endpoint.hpp>

#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

struct options {
    rfork::endpoint listen{"0.0.0.0", 7000};  // where other agents reach this one
    std::string socket_path;                  // where local programs reach it
    std::string criu;                         // empty: search, see criu.hpp
    std::string work_dir = "/run/rfork/work";
    std::string name;                         // host name told to peers; empty: gethostname()
    int ready_fd = -1;                        // write "ready\n" here once listening
};

// Parses `rfork-agent [OPTIONS]`; on bad input returns nullopt and sets `error`.
std::optional<options> parse_options(const std::vector<std::string>& args, std::string& error);

extern const char* const usage_text;

}  // namespace rfork::agent
