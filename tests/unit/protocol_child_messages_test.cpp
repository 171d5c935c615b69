// The messages of a child's life (output, input, signals, exit) and of the
// local requests about children (wait, kill, list).
#include "test_support.hpp"

#include <rfork/protocol.hpp>

#include <doctest/doctest.h>

namespace proto = rfork::protocol;
using rfork::errc;
using rfork_test::bytes;
using rfork_test::check_exact_length_required;
using rfork_test::decode_as;
using rfork_test::payload_of;

TEST_SUITE("unit.child_messages") {
    TEST_CASE("child_output carries its stream and any bytes") {
        proto::child_output m{proto::output_stream::stderr_stream, bytes{0, 1, 2, 0xff, '\n'}};
        CHECK(payload_of(m) == bytes{2, 0, 1, 2, 0xff, '\n'});
        proto::child_output out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        CHECK(out.stream == proto::output_stream::stderr_stream);
        CHECK(out.data == m.data);

        SUBCASE("empty data") {
            proto::child_output empty{proto::output_stream::stdout_stream, {}};
            REQUIRE_FALSE(proto::decode(payload_of(empty), out));
            CHECK(out.data.empty());
        }
        SUBCASE("an unknown stream") {
            CHECK(decode_as<proto::child_output>(bytes{0, 'x'}) == errc::malformed_message);
            CHECK(decode_as<proto::child_output>(bytes{3, 'x'}) == errc::malformed_message);
        }
        SUBCASE("no stream byte at all") { CHECK(decode_as<proto::child_output>(bytes{}) == errc::malformed_message); }
    }

    TEST_CASE("child_exit and wait_reply carry a status of 0 to 255") {
        CHECK(payload_of(proto::child_exit{137}) == bytes{0, 0, 0, 137});
        check_exact_length_required(proto::child_exit{42});
        check_exact_length_required(proto::wait_reply{255});
        CHECK_FALSE(decode_as<proto::child_exit>(payload_of(proto::child_exit{255})));
        CHECK(decode_as<proto::child_exit>(bytes{0, 0, 1, 0}) == errc::malformed_message);
        CHECK(decode_as<proto::wait_reply>(bytes{0, 0, 1, 0}) == errc::malformed_message);
        proto::wait_reply out;
        REQUIRE_FALSE(proto::decode(payload_of(proto::wait_reply{143}), out));
        CHECK(out.status == 143);
    }

    TEST_CASE("signal_child and kill_request carry a real signal number") {
        check_exact_length_required(proto::signal_child{15});
        CHECK(decode_as<proto::signal_child>(payload_of(proto::signal_child{0})) == errc::malformed_message);
        CHECK(decode_as<proto::signal_child>(payload_of(proto::signal_child{65})) == errc::malformed_message);
        CHECK_FALSE(decode_as<proto::signal_child>(payload_of(proto::signal_child{64})));

        check_exact_length_required(proto::kill_request{"0a1b2c3d", 9});
        CHECK(decode_as<proto::kill_request>(payload_of(proto::kill_request{"", 9})) == errc::malformed_message);
        CHECK(decode_as<proto::kill_request>(payload_of(proto::kill_request{"id", 0})) == errc::malformed_message);
        proto::kill_request out;
        REQUIRE_FALSE(proto::decode(payload_of(proto::kill_request{"0a1b2c3d", 2}), out));
        CHECK(out.child_id == "0a1b2c3d");
        CHECK(out.signal == 2);
    }

    TEST_CASE("wait_request names a child") {
        check_exact_length_required(proto::wait_request{"0a1b2c3d"});
        CHECK(decode_as<proto::wait_request>(payload_of(proto::wait_request{""})) == errc::malformed_message);
        const std::string over_limit(proto::max_text + 1, 'i');
        CHECK(decode_as<proto::wait_request>(payload_of(proto::wait_request{over_limit})) == errc::malformed_message);
    }

    TEST_CASE("list_reply round trip and refusals") {
        proto::list_reply m;
        m.children.push_back({"0a1b2c3d", "a", 4242, "running", 1500});
        m.children.push_back({"ffffffff", "node-7", 1, "running", 0});
        proto::list_reply out;
        REQUIRE_FALSE(proto::decode(payload_of(m), out));
        REQUIRE(out.children.size() == 2);
        CHECK(out.children[0].id == "0a1b2c3d");
        CHECK(out.children[0].origin_host == "a");
        CHECK(out.children[0].pid == 4242);
        CHECK(out.children[0].age_ms == 1500);
        CHECK(out.children[1].origin_host == "node-7");
        check_exact_length_required(m);

        SUBCASE("an empty list") {
            REQUIRE_FALSE(proto::decode(payload_of(proto::list_reply{}), out));
            CHECK(out.children.empty());
        }
        SUBCASE("a count larger than what follows") {
            auto p = payload_of(m);
            rfork_test::put_be32(p, 0, 3);
            CHECK(decode_as<proto::list_reply>(p) == errc::malformed_message);
        }
        SUBCASE("a count over the limit, whatever follows") {
            bytes p(4, 0);
            rfork_test::put_be32(p, 0, proto::list_reply::max_children + 1);
            CHECK(decode_as<proto::list_reply>(p) == errc::malformed_message);
        }
    }

    TEST_CASE("fork_request refuses unknown flags") {
        proto::fork_request m{"b:7000", 7, proto::fork_request::forward_stdin};
        CHECK_FALSE(decode_as<proto::fork_request>(payload_of(m)));
        m.flags = proto::fork_request::forward_stdin | proto::fork_request::snapshot;
        CHECK_FALSE(decode_as<proto::fork_request>(payload_of(m)));
        m.flags = 4;
        CHECK(decode_as<proto::fork_request>(payload_of(m)) == errc::malformed_message);
    }

    TEST_CASE("the new message types are known to frames") {
        for (auto type : {proto::message_type::child_output, proto::message_type::child_input,
                          proto::message_type::child_input_end, proto::message_type::child_exit,
                          proto::message_type::signal_child, proto::message_type::wait_request,
                          proto::message_type::wait_reply, proto::message_type::kill_request,
                          proto::message_type::kill_reply, proto::message_type::list_request,
                          proto::message_type::list_reply}) {
            CAPTURE(static_cast<int>(type));
            CHECK(proto::is_known(type));
        }
        CHECK_FALSE(proto::is_known(static_cast<proto::message_type>(37)));
        CHECK_FALSE(proto::is_known(static_cast<proto::message_type>(54)));
    }
}
