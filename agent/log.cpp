#include "log.hpp"

#include <chrono>
#include <string>

#include <fmt/chrono.h>

namespace rfork::agent {

namespace {
std::string log_name = "rfork-agent";
}

void set_log_name(std::string_view name) { log_name = fmt::format("rfork-agent[{}]", name); }

void write_log_line(std::string_view line) {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    fmt::print(stderr, "{:%H:%M:%S}.{:03} {}: {}\n", fmt::localtime(std::chrono::system_clock::to_time_t(now)), ms,
               log_name, line);
    std::fflush(stderr);
}

}  // namespace rfork::agent
