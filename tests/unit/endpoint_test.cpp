// "host:port" endpoints: what parses, what does not, and printing them back.
#include <rfork/endpoint.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

using rfork::endpoint;

TEST_SUITE("unit.endpoint") {

TEST_CASE("endpoint: valid endpoints") {
    struct row {
        std::string_view text;
        std::string_view host;
        std::uint16_t port;
    };
    for (const row& r : {row{"host:1", "host", 1}, row{"a.b:65535", "a.b", 65535},
                         row{"[::1]:7000", "::1", 7000}, row{"10.0.0.1:7000", "10.0.0.1", 7000},
                         row{"node-2.example.org:7000", "node-2.example.org", 7000},
                         row{"[fe80::1:2]:443", "fe80::1:2", 443}}) {
        CAPTURE(r.text);
        const auto ep = endpoint::parse(r.text);
        REQUIRE(ep.has_value());
        CHECK(ep->host == r.host);
        CHECK(ep->port == r.port);
    }
}

TEST_CASE("endpoint: invalid endpoints") {
    for (std::string_view text : {"", "host", ":7000", "host:", "host:0", "host:65536", "host:7x", "::1:7000",
                                  "[::1]7000", "a b:1", "host:-1", "host:+1", "host: 1", "host:1 ", "[]:7000",
                                  "[::1]:", "[::1]:0", "[::1", "a/b:1", "a\tb:1", "tcp://host:1",
                                  "host:99999999999999999999"}) {
        CAPTURE(text);
        CHECK_FALSE(endpoint::parse(text).has_value());
    }
}

TEST_CASE("endpoint: a numeric host is a plain IPv4 address or refused") {
    // The resolver reads these otherwise than a name check would (octal, short forms).
    for (std::string_view text : {"10.0.0.010:7000", "10.1:7000", "167772161:7000", "10.0.0.256:7000", "1.2.3.4.:7000",
                                  "0xa.0.0.8:7000", "0x0a000008:7000", "10.0.0.0x8:7000"}) {
        CAPTURE(text);
        CHECK_FALSE(endpoint::parse(text).has_value());
    }
    CHECK(endpoint::parse("10.0.0.10:7000").has_value());
    CHECK(endpoint::parse("0.0.0.0:7000").has_value());
    CHECK(endpoint::parse("node10:7000").has_value());
}

TEST_CASE("endpoint: to_string round trip") {
    for (std::string_view text : {"host:1", "a.b:65535", "[::1]:7000", "10.0.0.1:7000", "[fe80::1:2]:443"}) {
        CAPTURE(text);
        const auto ep = endpoint::parse(text);
        REQUIRE(ep.has_value());
        CHECK(ep->to_string() == text);
    }
    SUBCASE("an IPv6 host is printed in brackets") {
        const endpoint ep{"2001:db8::7", 7000};
        CHECK(ep.to_string() == "[2001:db8::7]:7000");
        const auto back = endpoint::parse(ep.to_string());
        REQUIRE(back.has_value());
        CHECK(back->host == ep.host);
        CHECK(back->port == ep.port);
    }
    SUBCASE("a name is printed as is") {
        CHECK(endpoint{"node2", 7000}.to_string() == "node2:7000");
    }
}

TEST_CASE("endpoint: whatever parses fits in a fork_request") {
    // fork_remote checks its endpoint with parse(), then sends the text in a
    // fork_request, whose decoder refuses more than protocol::max_text bytes.
    // An endpoint that parses but cannot be sent must fail here as bad_endpoint,
    // not at the agent as a malformed message.
    SUBCASE("the longest DNS name (253 characters) parses") {
        const std::string host(253, 'a');
        const auto ep = endpoint::parse(host + ":7000");
        REQUIRE(ep.has_value());
        CHECK(ep->host == host);
    }
    SUBCASE("a text longer than a fork_request can carry does not") {
        const std::string text = std::string(rfork::protocol::max_text, 'a') + ":7000";
        REQUIRE(text.size() > rfork::protocol::max_text);
        CHECK_FALSE(endpoint::parse(text).has_value());
    }
}

TEST_CASE("endpoint: parse_port") {
    CHECK(endpoint::parse_port("1") == std::optional<std::uint16_t>(1));
    CHECK(endpoint::parse_port("7000") == std::optional<std::uint16_t>(7000));
    CHECK(endpoint::parse_port("65535") == std::optional<std::uint16_t>(65535));
    for (std::string_view text : {"", "0", "65536", "70000", "-1", "+1", " 1", "1 ", "0x10", "1.0", "port",
                                  "4294967296", "99999999999999999999"}) {
        CAPTURE(text);
        CHECK_FALSE(endpoint::parse_port(text).has_value());
    }
}

}  // TEST_SUITE
