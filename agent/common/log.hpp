// The agent's log: one line per event on stderr. Children's output goes to stdout.
#pragma once

#include <fmt/core.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

namespace rfork::agent {

void set_log_name(std::string_view name);
// Writes one line: control characters (a peer's "\n", a terminal escape)
// are shown escaped, so that what peers send cannot forge or hide lines.
void write_log_line(std::string_view line);

// `text` with every control character as \xNN.
std::string printable(std::string_view text);

template <typename... Args>
void log(fmt::format_string<Args...> format, Args&&... args) {
    write_log_line(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace rfork::agent
