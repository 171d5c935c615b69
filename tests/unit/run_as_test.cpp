// The identity a CRIU takes, as the agent hands it to its namespace init.
#include "common/run_as.hpp"

#include <doctest/doctest.h>

using namespace rfork::agent;

TEST_SUITE("unit.run_as") {
    TEST_CASE("an identity survives its argument form") {
        run_as who{1000, 100, {100, 44, 27}, criu_restore_capabilities};
        CHECK(to_argument(who) == "1000:100:100,44,27:10000000100");
        auto back = from_argument(to_argument(who));
        REQUIRE(back);
        CHECK(*back == who);

        run_as lone{65534, 65534, {}, criu_capabilities};
        auto again = from_argument(to_argument(lone));
        REQUIRE(again);
        CHECK(*again == lone);
    }

    TEST_CASE("a malformed identity is refused") {
        for (const char* bad : {"", "root", "1000", "1000:100", "1000:100:44", "1000:100:44:zz", "x:100::0",
                                "1000:100:44,:0", "1000:100::0:extra", "-1:100::0", "4294967296:0::0"}) {
            CAPTURE(bad);
            CHECK_FALSE(from_argument(bad));
        }
    }

    TEST_CASE("CRIU as a user gets only the capabilities it cannot do without") {
        CHECK(criu_capabilities == run_as::bit(CAP_CHECKPOINT_RESTORE));
        CHECK(criu_restore_capabilities == (run_as::bit(CAP_CHECKPOINT_RESTORE) | run_as::bit(CAP_SETPCAP)));
    }
}
