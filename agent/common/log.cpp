#include "common/log.hpp"

#include <chrono>
#include <string>

#include <fmt/chrono.h>

namespace rfork::agent {

namespace {
std::string log_name = "rfork-agent";
}

void set_log_name(std::string_view name) { log_name = fmt::format("rfork-agent[{}]", name); }

std::string printable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f)
            out += fmt::format("\\x{:02x}", byte);
        else
            out += c;
    }
    return out;
}

void write_log_line(std::string_view line) {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    fmt::print(stderr, "{:%H:%M:%S}.{:03} {}: {}\n", fmt::localtime(std::chrono::system_clock::to_time_t(now)), ms,
               log_name, printable(line));
    std::fflush(stderr);
}

}  // namespace rfork::agent
