#include "common/config.hpp"

#include "common/options.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace rfork::agent {

namespace {

constexpr std::string_view blanks = " \t\r\v\f";
constexpr off_t max_config_size = 1 << 20;

std::string_view trim(std::string_view s) {
    auto first = s.find_first_not_of(blanks);
    if (first == std::string_view::npos) return {};
    return s.substr(first, s.find_last_not_of(blanks) - first + 1);
}

std::string octal_mode(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

}  // namespace

std::variant<std::vector<config_line>, config_error> parse_config(std::string_view text) {
    std::vector<config_line> lines;
    std::size_t number = 0;
    while (!text.empty()) {
        ++number;
        auto end = text.find('\n');
        auto line = trim(text.substr(0, end));
        text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
        if (line.empty() || line.starts_with('#')) continue;
        if (line.find('\0') != std::string_view::npos) return config_error{number, "holds a NUL byte", {}};
        auto space = line.find_first_of(blanks);
        std::string name(line.substr(0, space));
        std::string value(space == std::string_view::npos ? std::string_view{} : trim(line.substr(space)));
        if (name.starts_with('-')) {
            auto bare = name.substr(std::min(name.find_first_not_of('-'), name.size()));
            return config_error{number, "write options without their dashes: '" + bare + "', not '" + name + "'", {}};
        }
        if (name == "config") return config_error{number, "a config file cannot name another (config)", {}};
        if (auto removed = removed_option(name)) return config_error{number, removed->what, removed->fix};
        switch (kind_of_option(name)) {
        case option_kind::unknown: return config_error{number, "unknown option '" + name + "'", {}};
        case option_kind::flag:
            if (!value.empty())
                return config_error{number, "'" + name + "' takes no value, not '" + value + "'", {}};
            lines.push_back({number, {"--" + name}});
            break;
        case option_kind::takes_value:
            if (value.empty()) return config_error{number, "'" + name + "' needs a value", {}};
            lines.push_back({number, {"--" + name, value}});
            break;
        }
    }
    return lines;
}

std::variant<std::string, config_error> read_config_file(const std::string& path) {
    // O_NONBLOCK: a FIFO put there must not hang the agent before it is refused.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return config_error{0, std::string("cannot open it: ") + std::strerror(errno), {}};
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_it{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return config_error{0, std::string("cannot stat it: ") + std::strerror(errno), {}};
    if (!S_ISREG(st.st_mode)) return config_error{0, "not a regular file", "make " + path + " a regular file"};
    // The file decides what the agent, as root, runs and whom it trusts:
    // nobody but root may change it.
    bool foreign = st.st_uid != 0;
    bool writable = st.st_mode & (S_IWGRP | S_IWOTH);
    if (foreign || writable) {
        std::string what = foreign ? "belongs to uid " + std::to_string(st.st_uid) + ", not root"
                                   : "is writable by group or others (mode " + octal_mode(st.st_mode) + ")";
        std::string fix = foreign && writable ? "chown root " + path + " && chmod go-w " + path
                          : foreign           ? "chown root " + path
                                              : "chmod go-w " + path;
        return config_error{0, what + ": only root may decide what this agent, running as root, does and trusts",
                            fix};
    }
    if (st.st_size > max_config_size) return config_error{0, "larger than 1 MiB: not a config file", {}};
    std::string text;
    char buffer[4096];
    for (;;) {
        auto n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return config_error{0, std::string("cannot read it: ") + std::strerror(errno), {}};
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > static_cast<std::size_t>(max_config_size))
            return config_error{0, "larger than 1 MiB: not a config file", {}};
    }
    return text;
}

}  // namespace rfork::agent
