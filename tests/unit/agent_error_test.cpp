// An agent's error frame as the user reads it: "rfork: " once, whether the
// agent sends its text bare (the protocol's convention) or, as an older one
// did, with the prefix.
#include "test_support.hpp"

#include <rfork/detail/agent_connection.hpp>
#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

#include <string>

using rfork::errc;

namespace {

rfork::detail::bytes error_payload(errc code, std::string text) {
    rfork::protocol::error_message e{code, std::move(text)};
    rfork::detail::bytes payload;
    rfork::detail::wire_writer w(payload);
    e.encode(w);
    return payload;
}

}  // namespace

TEST_SUITE("unit.agent_error") {
    TEST_CASE("a bare error text gets the prefix") {
        auto e = rfork::detail::error_from_agent(error_payload(errc::dump_failed, "CRIU said no"));
        CHECK(e.ec == errc::dump_failed);
        CHECK(e.message == "rfork: CRIU said no");
    }

    TEST_CASE("an older agent's prefixed text is not prefixed twice") {
        auto e = rfork::detail::error_from_agent(error_payload(errc::not_permitted, "rfork: refused"));
        CHECK(e.ec == errc::not_permitted);
        CHECK(e.message == "rfork: refused");
    }

    TEST_CASE("a malformed error frame is malformed_message with the prefix") {
        rfork::detail::bytes garbage{0x00};
        auto e = rfork::detail::error_from_agent(garbage);
        CHECK(e.ec == errc::malformed_message);
        CHECK(e.message.starts_with("rfork: "));
    }

    TEST_CASE("a socket path longer than a unix socket's is refused with its path") {
        std::string path = "/run/" + std::string(110, 'p');
        auto e = rfork::detail::check_agent_socket(path);
        CHECK(e.ec == errc::agent_not_found);
        CHECK(e.message.find(path) != std::string::npos);
        CHECK(!rfork::detail::check_agent_socket("/run/rfork/agent.sock").ec);
        CHECK(!rfork::detail::check_agent_socket(std::string(107, 'p')).ec);
    }
}
