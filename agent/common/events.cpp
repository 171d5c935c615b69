#include "common/events.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <chrono>

#include <fcntl.h>
#include <unistd.h>

namespace rfork::agent {

namespace {

int event_fd = -1;

void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (char c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (byte < 0x20 || byte == 0x7f) {
            out += fmt::format("\\u{:04x}", byte);
        } else {
            out += c;
        }
    }
    out += '"';
}

}  // namespace

std::string event_line(std::string_view name, double unix_time, std::initializer_list<event_field> fields) {
    std::string line = "{\"event\":";
    append_json_string(line, name);
    line += fmt::format(",\"time\":{:.3f}", unix_time);
    for (auto& field : fields) {
        line += ',';
        append_json_string(line, field.key);
        line += ':';
        if (auto text = std::get_if<std::string_view>(&field.value))
            append_json_string(line, *text);
        else
            line += std::to_string(std::get<std::int64_t>(field.value));
    }
    line += "}\n";
    return line;
}

std::error_code open_event_log(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) return {errno, std::system_category()};
    if (event_fd >= 0) ::close(event_fd);
    event_fd = fd;
    return {};
}

std::error_code adopt_event_fd(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return {errno, std::system_category()};
    if ((flags & O_ACCMODE) == O_RDONLY) return std::make_error_code(std::errc::bad_file_descriptor);
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return {errno, std::system_category()};
    if (event_fd >= 0 && event_fd != fd) ::close(event_fd);
    event_fd = fd;
    return {};
}

void emit_event(std::string_view name, std::initializer_list<event_field> fields) {
    if (event_fd < 0) return;
    auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto line = event_line(name, now, fields);
    // Best effort: a full disk must not stop the agent. A short write is
    // retried so that a line is never cut.
    std::string_view rest = line;
    while (!rest.empty()) {
        auto n = ::write(event_fd, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
}

}  // namespace rfork::agent
