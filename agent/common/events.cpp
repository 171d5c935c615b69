#include "common/events.hpp"

#include "common/log.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rfork::agent {

namespace {

int event_fd = -1;
bool dropping = false;  // the fd was full: one log line per episode

// A field's text is at most this long; a line, at most PIPE_BUF, so that a
// write to a pipe is whole or not at all.
constexpr std::size_t max_field = 512;
constexpr std::size_t short_field = 64;

// The length of the valid UTF-8 sequence at the start of `text`, or 0.
std::size_t utf8_sequence(std::string_view text) {
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    unsigned char first = byte(0);
    std::size_t n = first < 0x80 ? 1 : (first >> 5) == 0x6 ? 2 : (first >> 4) == 0xe ? 3 : (first >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || n > text.size()) return 0;
    for (std::size_t i = 1; i < n; ++i)
        if ((byte(i) & 0xc0) != 0x80) return 0;
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 2 && first < 0xc2) || (n == 3 && first == 0xe0 && byte(1) < 0xa0) ||
        (n == 3 && first == 0xed && byte(1) >= 0xa0) || (n == 4 && first == 0xf0 && byte(1) < 0x90) ||
        (n == 4 && (first > 0xf4 || (first == 0xf4 && byte(1) >= 0x90))))
        return 0;
    return n;
}

// `text` as a JSON string: escaped as JSON requires, and valid UTF-8 (a
// byte that is not becomes U+FFFD), so that no text a peer sends can end the
// line or make it unreadable to a strict reader.
void append_json_string(std::string& out, std::string_view text, std::size_t most) {
    if (text.size() > most) text = text.substr(0, most);
    out += '"';
    while (!text.empty()) {
        auto byte = static_cast<unsigned char>(text.front());
        std::size_t n = utf8_sequence(text);
        if (n == 0) {
            out += "\\ufffd";
            n = 1;
        } else if (byte == '"' || byte == '\\') {
            out += '\\';
            out += static_cast<char>(byte);
        } else if (byte < 0x20 || byte == 0x7f) {
            out += fmt::format("\\u{:04x}", byte);
        } else {
            out.append(text.substr(0, n));
        }
        text.remove_prefix(n);
    }
    out += '"';
}

std::string line_of(std::string_view name, double unix_time, std::initializer_list<event_field> fields,
                    std::size_t most) {
    std::string line = "{\"event\":";
    append_json_string(line, name, most);
    line += fmt::format(",\"time\":{:.3f}", unix_time);
    for (auto& field : fields) {
        line += ',';
        append_json_string(line, field.key, most);
        line += ':';
        if (auto text = std::get_if<std::string_view>(&field.value))
            append_json_string(line, *text, most);
        else
            line += std::to_string(std::get<std::int64_t>(field.value));
    }
    line += "}\n";
    return line;
}

}  // namespace

std::string event_line(std::string_view name, double unix_time, std::initializer_list<event_field> fields) {
    auto line = line_of(name, unix_time, fields, max_field);
    if (line.size() > PIPE_BUF) line = line_of(name, unix_time, fields, short_field);
    return line;
}

std::error_code open_event_log(const std::string& path) {
    // Non-blocking: a FIFO without a reader must not hold the agent.
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
    if (fd < 0) return {errno, std::system_category()};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return std::make_error_code(std::errc::invalid_argument);  // a regular file, or --event-fd
    }
    if (event_fd >= 0) ::close(event_fd);
    event_fd = fd;
    return {};
}

std::error_code adopt_event_fd(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return {errno, std::system_category()};
    if ((flags & O_ACCMODE) == O_RDONLY) return std::make_error_code(std::errc::bad_file_descriptor);
    // The fd is the agent's now: never inherited by CRIU or a child, and a
    // full pipe drops events rather than stopping the agent.
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return {errno, std::system_category()};
    if (event_fd >= 0 && event_fd != fd) ::close(event_fd);
    event_fd = fd;
    return {};
}

void emit_event(std::string_view name, std::initializer_list<event_field> fields) {
    if (event_fd < 0) return;
    auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto line = event_line(name, now, fields);
    // One write of at most PIPE_BUF bytes: whole, or (a full pipe, a full
    // disk) not at all, and then dropped.
    ssize_t n;
    do n = ::write(event_fd, line.data(), line.size());
    while (n < 0 && errno == EINTR);
    bool written = n == static_cast<ssize_t>(line.size());
    if (!written && !dropping) log("events: cannot write to the event log ({}); dropping events until it can",
                                   n < 0 ? std::strerror(errno) : "a short write");
    dropping = !written;
}

}  // namespace rfork::agent
