// The agent's events: one JSON object per line, written where --event-log or
// --event-fd says, for operators' tools (and the tests) to follow what the
// agent did without reading its log's wording. Names and fields are stable:
// README's "Events" lists them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <variant>

namespace rfork::agent {

struct event_field {
    std::string_view key;
    std::variant<std::string_view, std::int64_t> value;

    event_field(std::string_view k, std::string_view v) : key(k), value(v) {}
    event_field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
    event_field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
    template <typename Integer>
        requires std::is_integral_v<Integer>
    event_field(std::string_view k, Integer v) : key(k), value(static_cast<std::int64_t>(v)) {}
};

// One event as its line: {"event":NAME,"time":UNIX_SECONDS,...fields}, with
// strings escaped as JSON requires (a peer's text cannot break a line).
std::string event_line(std::string_view name, double unix_time, std::initializer_list<event_field> fields);

// Where events go from now on: a file appended to, or an fd the agent was
// given (it is then the agent's, closed on exec). An error if it cannot be used.
std::error_code open_event_log(const std::string& path);
std::error_code adopt_event_fd(int fd);

// Writes one event, if events go anywhere; one write(2) per line.
void emit_event(std::string_view name, std::initializer_list<event_field> fields);

}  // namespace rfork::agent
