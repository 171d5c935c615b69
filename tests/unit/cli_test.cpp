// The subcommands' command lines (local/cli.hpp, local/keygen_command.hpp):
// signal names, kill's and list's arguments, and keygen's three forms.
#include "local/cli.hpp"
#include "local/keygen_command.hpp"

#include <CLI/CLI.hpp>

#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <vector>

using namespace rfork::agent;

namespace {

void parse(CLI::App& app, std::vector<std::string> args) {
    std::reverse(args.begin(), args.end());
    app.parse(args);
}

}  // namespace

TEST_SUITE("unit.cli") {

TEST_CASE("cli: signals by number and by name with or without SIG") {
    CHECK(parse_signal("15") == SIGTERM);
    CHECK(parse_signal("9") == SIGKILL);
    CHECK(parse_signal("64") == 64);
    CHECK(parse_signal("TERM") == SIGTERM);
    CHECK(parse_signal("SIGTERM") == SIGTERM);
    CHECK(parse_signal("KILL") == SIGKILL);
    CHECK(parse_signal("SIGUSR1") == SIGUSR1);
    CHECK(parse_signal("HUP") == SIGHUP);
}

TEST_CASE("cli: what is no signal is refused") {
    for (auto bad : {"0", "65", "-9", "", "SIG", "term", "SIGFOO", "15x", "TERM "}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_signal(bad));
    }
}

TEST_CASE("cli: kill takes an ID and a signal") {
    CLI::App app;
    kill_command kill;
    auto* command = add_kill_command(app, kill);
    parse(app, {"kill", "c17", "--signal", "KILL", "--socket", "/tmp/x.sock"});
    CHECK(command->parsed());
    CHECK(kill.id == "c17");
    CHECK(kill.signal == SIGKILL);
    CHECK(kill.socket == "/tmp/x.sock");
}

TEST_CASE("cli: kill sends TERM by default and refuses an unknown signal or no ID") {
    CLI::App app;
    kill_command kill;
    add_kill_command(app, kill);
    parse(app, {"kill", "c1"});
    CHECK(kill.signal == SIGTERM);
    CHECK_THROWS_WITH_AS(parse(app, {"kill", "c1", "--signal", "NOPE"}), "unknown signal 'NOPE'", CLI::ValidationError);
    CHECK_THROWS_AS(parse(app, {"kill"}), CLI::RequiredError);
}

TEST_CASE("cli: list refuses a socket path no local socket can have") {
    CLI::App app;
    list_command list;
    add_list_command(app, list);
    parse(app, {"list", "--socket", "/tmp/list.sock"});
    CHECK(list.socket == "/tmp/list.sock");
    CHECK_THROWS_AS(parse(app, {"list", "--socket", "/tmp/" + std::string(200, 'x')}), CLI::ValidationError);
}

TEST_CASE("cli: keygen has three forms") {
    struct form {
        std::vector<std::string> args;
        keygen_form is;
    };
    for (auto& [args, is] : std::vector<form>{
             {{"keygen", "/etc/rfork/secret"}, keygen_form::secret},
             {{"keygen", "--ca", "/etc/rfork/ca"}, keygen_form::authority},
             {{"keygen", "--host", "a", "--host", "10.0.0.1", "--ca", "/ca", "/out"}, keygen_form::host},
             {{"keygen"}, keygen_form::none},
             {{"keygen", "--host", "a", "/out"}, keygen_form::none},
             {{"keygen", "--ca", "/ca", "/out"}, keygen_form::none},
             {{"keygen", "--host", "a", "--ca", "/ca"}, keygen_form::none},
         }) {
        CAPTURE(args);
        CLI::App app;
        keygen_command keygen;
        add_keygen_command(app, keygen);
        parse(app, args);
        CHECK(form_of(keygen) == is);
        if (is == keygen_form::host) CHECK(keygen.hosts == std::vector<std::string>{"a", "10.0.0.1"});
    }
}

}  // TEST_SUITE
