// What peers send reaches the agent's log as text of one line.
#include "common/log.hpp"

#include <doctest/doctest.h>

using rfork::agent::printable;

TEST_SUITE("unit.log") {
    TEST_CASE("control characters from peers are escaped and cannot forge a line") {
        CHECK(printable("host-1") == "host-1");
        CHECK(printable("a\n12:00:00.000 rfork-agent: child restored") ==
              "a\\x0a12:00:00.000 rfork-agent: child restored");
        CHECK(printable("\x1b[2Jgone\r") == "\\x1b[2Jgone\\x0d");
        CHECK(printable(std::string_view("nul\0here", 8)) == "nul\\x00here");
        CHECK(printable("\x7f") == "\\x7f");
        CHECK(printable("héllo") == "héllo");  // UTF-8 stays as it is
    }
}
