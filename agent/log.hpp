// The agent's log: one line per event on stderr. Children's output goes to stdout.
#pragma once

#include <fmt/core.h>

#include <cstdio>
#include <string_view>
#include <utility>

namespace rfork::agent {

void set_log_name(std::string_view name);
void write_log_line(std::string_view line);

template <typename... Args>
void log(fmt::format_string<Args...> format, Args&&... args) {
    write_log_line(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace rfork::agent
