// The agent's event lines (agent/common/events.hpp): one JSON object each,
// whatever text a peer put in a field.
#include "common/events.hpp"

#include <doctest/doctest.h>

#include <climits>
#include <string>

using rfork::agent::event_line;

TEST_SUITE("unit.events") {
    TEST_CASE("an event line holds its name and time and then its fields in order") {
        auto line = event_line("child_ended", 1700000000.25, {{"id", "b-1"}, {"status", 7}, {"normal", 1}});
        CHECK(line == "{\"event\":\"child_ended\",\"time\":1700000000.250,\"id\":\"b-1\",\"status\":7,\"normal\":1}\n");
    }

    TEST_CASE("negative and large numbers are written as JSON numbers") {
        CHECK(event_line("x", 0, {{"a", -1}, {"b", std::uint64_t(1) << 40}}) ==
              "{\"event\":\"x\",\"time\":0.000,\"a\":-1,\"b\":1099511627776}\n");
    }

    TEST_CASE("a peer's text cannot end the line or the string") {
        std::string hostile = "a\"b\\c\nd\x01\x7f";
        auto line = event_line("peer_refused", 1, {{"text", hostile}});
        CHECK(line == "{\"event\":\"peer_refused\",\"time\":1.000,\"text\":\"a\\\"b\\\\c\\u000ad\\u0001\\u007f\"}\n");
        // One line: the only newline is the last byte.
        CHECK(line.find('\n') == line.size() - 1);
    }

    TEST_CASE("an event with no fields is still an object") {
        CHECK(event_line("agent_ready", 2.5, {}) == "{\"event\":\"agent_ready\",\"time\":2.500}\n");
    }

    TEST_CASE("bytes that are not UTF-8 become U+FFFD and valid UTF-8 stays as it is") {
        std::string text = "caf\xc3\xa9 \xff \xc0\xaf \xed\xa0\x80 \xe2\x82";
        auto line = event_line("x", 0, {{"t", text}});
        CHECK(line == "{\"event\":\"x\",\"time\":0.000,\"t\":\"caf\xc3\xa9 \\ufffd \\ufffd\\ufffd "
                      "\\ufffd\\ufffd\\ufffd \\ufffd\\ufffd\"}\n");
    }

    TEST_CASE("a line is never longer than a pipe takes whole") {
        std::string big(100000, 'a');
        std::string controls(3000, '\x01');
        auto line = event_line("x", 0, {{"a", big}, {"b", big}, {"c", controls}, {"d", controls}});
        CHECK(line.size() <= PIPE_BUF);
        CHECK(line.back() == '\n');
        CHECK(line.find("\"a\":\"" + std::string(64, 'a') + "\"") != std::string::npos);
    }
}
