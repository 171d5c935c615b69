// The sending agent's decisions that need no I/O: CRIU's dump command line
// for a fork request, and what the program is told when a step fails.
#include "send/fork_plan.hpp"

#include "criu/page_criu.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

using namespace rfork;
using namespace rfork::agent;

namespace {

dump_facts caller_facts() {
    dump_facts f;
    f.pid = 4242;
    f.criu_pid = 4242;
    f.caller_uid = 0;
    f.socket_inode = 777;
    f.externals = {"tty[8800:3]"};
    return f;
}

dump_facts snapshot_facts(std::int64_t anonymous_bytes) {
    auto f = caller_facts();
    f.snapshot = true;
    f.anonymous_bytes = anonymous_bytes;
    return f;
}

dump_plan planned(dump_facts f) {
    auto plan = plan_dump(std::move(f));
    REQUIRE(std::holds_alternative<dump_plan>(plan));
    return std::get<dump_plan>(plan);
}

std::vector<std::string> command_of(const dump_plan& plan) { return dump_command("/criu", plan.request); }

bool has(const std::vector<std::string>& argv, const std::string& word) {
    return std::find(argv.begin(), argv.end(), word) != argv.end();
}

// The word after `option` in `argv`, or empty.
std::string after(const std::vector<std::string>& argv, const std::string& option) {
    auto it = std::find(argv.begin(), argv.end(), option);
    return it == argv.end() || it + 1 == argv.end() ? std::string() : *(it + 1);
}

template <typename Message>
detail::received_frame frame_of(const Message& m) {
    auto bytes = protocol::encode(m);
    return {Message::type, detail::bytes(bytes.begin() + protocol::frame_header_size, bytes.end())};
}

const std::string endpoint_text = "b:7000";

}  // namespace

TEST_SUITE("unit.fork_plan") {
    TEST_CASE("a caller is dumped and left running as the process CRIU sees") {
        auto f = caller_facts();
        f.criu_pid = 7;  // inside a child's pid namespace
        auto plan = planned(f);
        CHECK_FALSE(plan.lazy);
        auto argv = command_of(plan);
        CHECK(argv.at(0) == "/criu");
        CHECK(argv.at(1) == "dump");
        CHECK(after(argv, "--tree") == "7");
        CHECK(has(argv, "--leave-running"));
        CHECK_FALSE(has(argv, "--unprivileged"));
        CHECK_FALSE(has(argv, "--lazy-pages"));
        CHECK(has(argv, "unix[777]"));
        CHECK(has(argv, "tty[8800:3]"));
    }

    TEST_CASE("a user's process is dumped by CRIU running unprivileged") {
        auto f = caller_facts();
        f.caller_uid = 1000;
        auto argv = command_of(planned(f));
        CHECK(has(argv, "--unprivileged"));
        CHECK(has(argv, "--leave-running"));
    }

    TEST_CASE("root's TCP connections are dumped and a user's refused") {
        auto f = caller_facts();
        f.tcp_connections = true;
        CHECK(has(command_of(planned(f)), "--tcp-established"));
        f.caller_uid = 1000;
        auto refused = plan_dump(f);
        REQUIRE(std::holds_alternative<failure>(refused));
        CHECK(std::get<failure>(refused).code == errc::dump_failed);
    }

    TEST_CASE("a large snapshot of root's goes with lazy pages and is not left running") {
        auto plan = planned(snapshot_facts(lazy_pages_threshold));
        CHECK(plan.lazy);
        auto argv = command_of(plan);
        CHECK_FALSE(has(argv, "--leave-running"));
        CHECK(has(argv, "--lazy-pages"));
        CHECK(after(argv, "--ps-socket") == std::to_string(criu_page_socket_fd));
        CHECK(after(argv, "--status-fd") == std::to_string(criu_ready_fd));
    }

    TEST_CASE("a snapshot goes whole when small or a user's or when this host cannot serve lazy pages") {
        CHECK_FALSE(planned(snapshot_facts(lazy_pages_threshold - 1)).lazy);
        auto users = snapshot_facts(lazy_pages_threshold);
        users.caller_uid = 1000;
        CHECK_FALSE(planned(users).lazy);
        auto here = snapshot_facts(lazy_pages_threshold);
        here.lazy_pages_here = false;
        auto plan = planned(here);
        CHECK_FALSE(plan.lazy);
        CHECK_FALSE(has(command_of(plan), "--lazy-pages"));
    }

    TEST_CASE("a process without a session of its own in its namespace is refused") {
        auto refused = session_refusal(4242, 0);
        REQUIRE(refused);
        CHECK(refused->code == errc::dump_failed);
        CHECK_FALSE(session_refusal(4242, 4242));
    }

    TEST_CASE("the credentials an agent holds come from its options") {
        options opts;
        CHECK(credentials_of(opts) == credentials::host_secret);
        opts.cert = "/etc/rfork/a.crt";
        CHECK(credentials_of(opts) == credentials::certificates);
        opts.secret_file = "/etc/rfork/secret";
        CHECK(credentials_of(opts) == credentials::shared_secret);
    }

    TEST_CASE("a refused TLS handshake names the remedy for the credentials held") {
        connect_failure tls{connect_failure::step::tls, asio::error::connection_reset, "reset"};
        auto secret = connect_refusal(tls, endpoint_text, credentials::shared_secret);
        CHECK(secret.code == errc::agent_unreachable);
        CHECK(secret.text.find("--secret-file") != std::string::npos);
        auto certificates = connect_refusal(tls, endpoint_text, credentials::certificates);
        CHECK(certificates.code == errc::agent_unreachable);
        CHECK(certificates.text.find("--secret-file") == std::string::npos);
        CHECK(certificates.text.find("--ca") != std::string::npos);
    }

    TEST_CASE("a peer whose certificate names another host keeps its own code") {
        connect_failure wrong{connect_failure::step::wrong_host, errc::not_permitted, "showed a certificate for c"};
        CHECK(connect_refusal(wrong, endpoint_text, credentials::certificates).code == errc::not_permitted);
        connect_failure reach{connect_failure::step::reach, asio::error::connection_refused, "refused"};
        CHECK(connect_refusal(reach, endpoint_text, credentials::shared_secret).code == errc::agent_unreachable);
    }

    TEST_CASE("child ids are plain") {
        CHECK(plain_child_id("b-1234-5"));
        CHECK_FALSE(plain_child_id(""));
        CHECK_FALSE(plain_child_id("../x"));
        CHECK_FALSE(plain_child_id(std::string(65, 'a')));
        CHECK(plain_child_id(std::string(64, 'a')));
    }

    TEST_CASE("the peer's restored child is the answer") {
        auto judged = judge_answer({}, {}, frame_of(protocol::restored{"b-1", "b", 12}), endpoint_text);
        REQUIRE(std::holds_alternative<protocol::restored>(judged));
        CHECK(std::get<protocol::restored>(judged).child_id == "b-1");
        CHECK(std::get<protocol::restored>(judged).pid == 12);
    }

    TEST_CASE("the peer's error frame is passed on with its code and bare text") {
        auto reply = frame_of(protocol::error_message{errc::restore_failed, "CRIU failed"});
        for (std::error_code sending : {std::error_code{}, std::error_code(asio::error::broken_pipe)}) {
            auto judged = judge_answer(sending, {}, reply, endpoint_text);
            REQUIRE(std::holds_alternative<failure>(judged));
            auto& f = std::get<failure>(judged);
            CHECK(f.code == errc::restore_failed);
            CHECK(f.text.starts_with("CRIU failed"));
            CHECK(f.text.find(endpoint_text) != std::string::npos);
        }
    }

    TEST_CASE("a malformed error frame is a malformed message") {
        detail::received_frame reply{protocol::message_type::error, {1}};
        auto judged = judge_answer({}, {}, reply, endpoint_text);
        REQUIRE(std::holds_alternative<failure>(judged));
        CHECK(std::get<failure>(judged).code == errc::malformed_message);
    }

    TEST_CASE("no answer or an odd one fails the fork") {
        auto restored = frame_of(protocol::restored{"b-1", "b", 12});
        auto code_of = [](const std::variant<protocol::restored, failure>& judged) {
            REQUIRE(std::holds_alternative<failure>(judged));
            return std::get<failure>(judged).code;
        };
        CHECK(code_of(judge_answer(asio::error::broken_pipe, {}, restored, endpoint_text)) == errc::transfer_failed);
        CHECK(code_of(judge_answer({}, asio::error::eof, restored, endpoint_text)) == errc::transfer_failed);
        CHECK(code_of(judge_answer({}, {}, frame_of(protocol::image_end{}), endpoint_text)) ==
              errc::unexpected_message);
        CHECK(code_of(judge_answer({}, {}, frame_of(protocol::restored{"../x", "b", 12}), endpoint_text)) ==
              errc::unexpected_message);
        CHECK(answer_overdue(endpoint_text, std::chrono::seconds(30)).code == errc::timed_out);
    }
}
