// "host:port" endpoints, as fork_remote and rfork-agent --listen take them.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rfork {

struct endpoint {
    std::string host;  // a name, an IPv4 address, or an IPv6 address without brackets
    std::uint16_t port = 0;

    // "host:port" or "[v6addr]:port". Nothing else: no scheme, no path.
    static std::optional<endpoint> parse(std::string_view text) {
        std::string_view host, port;
        if (text.starts_with('[')) {
            auto close = text.find("]:");
            if (close == std::string_view::npos) return std::nullopt;
            host = text.substr(1, close - 1);
            port = text.substr(close + 2);
        } else {
            auto colon = text.rfind(':');
            if (colon == std::string_view::npos) return std::nullopt;
            host = text.substr(0, colon);
            port = text.substr(colon + 1);
            if (host.find(':') != std::string_view::npos) return std::nullopt;  // v6 needs brackets
        }
        auto number = parse_port(port);
        // 253: the longest DNS name; it also keeps every endpoint within a message's string limit.
        if (host.empty() || host.size() > 253 || !number ||
            host.find_first_of(" /\t\r\n") != std::string_view::npos || !plain_ipv4_if_numeric(host))
            return std::nullopt;
        return endpoint{std::string(host), *number};
    }

    // What the resolver takes for an IPv4 address must be one in its one
    // plain form: it reads "10.0.0.010" (octal), "0xa.0.0.8" or "10.1"
    // otherwise than anyone who checks the name, TLS included.
    static bool plain_ipv4_if_numeric(std::string_view host) {
        std::string text(host);
        in_addr ignored{};
        if (::inet_pton(AF_INET, text.c_str(), &ignored) == 1) return true;
        bool numeric = host.find_first_not_of("0123456789.") == std::string_view::npos;
        return !numeric && ::inet_aton(text.c_str(), &ignored) == 0;
    }

    static std::optional<std::uint16_t> parse_port(std::string_view text) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc{} || end != text.data() + text.size() || value == 0 || value > 65535)
            return std::nullopt;
        return static_cast<std::uint16_t>(value);
    }

    std::string to_string() const {
        bool v6 = host.find(':') != std::string::npos;
        return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
    }
};

}  // namespace rfork
