// The agent's command line (agent_command_line.hpp, options.hpp): each option
// into its field, the defaults, the last value given winning, bad values
// refused with the option named and nothing changed, and the checks of the
// options as a whole, --socket's length among them. No root: no config file
// here (config_test.cpp has those).
#include "common/agent_command_line.hpp"
#include "common/options.hpp"

#include <rfork/options.hpp>

#include <CLI/CLI.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

using namespace rfork::agent;
using args = std::vector<std::string>;

namespace {

options parsed(args given) {
    given.insert(given.begin(), {"--listen", "7000"});
    options_error error;
    auto o = parse_options(given, error);
    REQUIRE_MESSAGE(o, error.what);
    return *o;
}

options_error refused(const args& given) {
    options_error error;
    auto o = parse_options(given, error);
    CHECK_FALSE(o);
    CHECK_FALSE(error.what.empty());
    return error;
}

// RFORK_AGENT_SOCKET as a test sets it, restored after.
struct socket_environment {
    std::optional<std::string> saved;
    explicit socket_environment(const std::string& value) {
        if (const char* was = std::getenv("RFORK_AGENT_SOCKET")) saved = was;
        ::setenv("RFORK_AGENT_SOCKET", value.c_str(), 1);
    }
    ~socket_environment() {
        if (saved) ::setenv("RFORK_AGENT_SOCKET", saved->c_str(), 1);
        else ::unsetenv("RFORK_AGENT_SOCKET");
    }
};

}  // namespace

TEST_SUITE("unit.options") {

TEST_CASE("options: each option lands in its field") {
    struct one {
        args given;
        std::function<bool(const options&)> landed;
    };
    const std::vector<one> each{
        {{"--listen", "0.0.0.0:7100", "--secret-file", "/s"}, [](auto& o) { return o.listen.to_string() == "0.0.0.0:7100"; }},
        {{"--secret-file", "/etc/rfork/my secret"}, [](auto& o) { return o.secret_file == "/etc/rfork/my secret"; }},
        {{"--cert", "/c", "--key", "/k", "--ca", "/a"},
         [](auto& o) { return o.cert == "/c" && o.key == "/k" && o.ca == "/a"; }},
        {{"--allow-root"}, [](auto& o) { return o.allow_root; }},
        {{"--allow-uid", "1000,1001"}, [](auto& o) { return o.allow_uids == std::vector<std::uint32_t>{1000, 1001}; }},
        {{"--local-users", "4242"}, [](auto& o) { return o.local_users == std::vector<std::uint32_t>{4242}; }},
        {{"--socket", "/tmp/a.sock"}, [](auto& o) { return o.socket_path == "/tmp/a.sock"; }},
        {{"--criu", "/opt/criu"}, [](auto& o) { return o.criu == "/opt/criu"; }},
        {{"--work-dir", "/w"}, [](auto& o) { return o.work_dir == "/w"; }},
        {{"--file-cache", "/f"}, [](auto& o) { return o.file_cache == "/f"; }},
        {{"--file-cache-size", "5"}, [](auto& o) { return o.limits.file_cache_size == 5; }},
        {{"--max-file-size", "6"}, [](auto& o) { return o.limits.max_file_size == 6; }},
        {{"--no-lazy-pages"}, [](auto& o) { return !o.lazy_pages; }},
        {{"--name", "b"}, [](auto& o) { return o.name == "b"; }},
        {{"--ready-fd", "3"}, [](auto& o) { return o.ready_fd == 3; }},
        {{"--handshake-timeout", "2"}, [](auto& o) { return o.limits.handshake_timeout == std::chrono::seconds(2); }},
        {{"--idle-timeout", "3"}, [](auto& o) { return o.limits.idle_timeout == std::chrono::seconds(3); }},
        {{"--image-timeout", "4"}, [](auto& o) { return o.limits.image_timeout == std::chrono::seconds(4); }},
        {{"--max-image-size", "7"}, [](auto& o) { return o.limits.max_image_size == 7; }},
        {{"--max-restores", "8"}, [](auto& o) { return o.limits.max_restores == 8; }},
        {{"--max-pending-connections", "9"}, [](auto& o) { return o.limits.max_pending_connections == 9; }},
        {{"--max-pending-per-source", "10"}, [](auto& o) { return o.limits.max_pending_per_source == 10; }},
        {{"--max-image-files", "11"}, [](auto& o) { return o.limits.max_image_files == 11; }},
        {{"--max-children", "12"}, [](auto& o) { return o.limits.max_children == 12; }},
        {{"--child-max-pids", "13"}, [](auto& o) { return o.limits.child_max_pids == 13; }},
        {{"--child-max-memory", "14"}, [](auto& o) { return o.limits.child_max_memory == 14; }},
        {{"--allow-unlimited-children"}, [](auto& o) { return o.allow_unlimited_children; }},
    };
    for (auto& [given, landed] : each) {
        CAPTURE(given.front());
        CHECK(landed(parsed(given)));
        // In a config file's form too: --NAME=VALUE.
        if (given.size() == 2) CHECK(landed(parsed({given[0] + "=" + given[1]})));
    }
}

TEST_CASE("options: the defaults are those of the options struct") {
    socket_environment unset("");
    auto o = parsed({});
    const options defaults{};
    CHECK(o.listen.to_string() == "127.0.0.1:7000");
    CHECK(o.socket_path == rfork::default_agent_socket);
    CHECK(o.work_dir == defaults.work_dir);
    CHECK(o.file_cache == defaults.file_cache);
    CHECK(o.lazy_pages);
    CHECK_FALSE(o.allow_root);
    CHECK(o.allow_uids.empty());
    CHECK(o.ready_fd == -1);
    CHECK(o.limits.idle_timeout == defaults.limits.idle_timeout);
    CHECK(o.limits.max_image_size == defaults.limits.max_image_size);
    CHECK(o.limits.max_pending_per_source == defaults.limits.max_pending_per_source);
}

TEST_CASE("options: --socket defaults to $RFORK_AGENT_SOCKET") {
    socket_environment set("/tmp/from-environment.sock");
    CHECK(parsed({}).socket_path == "/tmp/from-environment.sock");
    CHECK(parsed({"--socket", "/tmp/given.sock"}).socket_path == "/tmp/given.sock");
}

TEST_CASE("options: the last value given wins and a flag once set stays set") {
    auto o = parsed({"--listen", "7001", "--name", "a", "--allow-root", "--name", "b", "--allow-uid", "5,6",
                     "--allow-uid", "7"});
    CHECK(o.listen.port == 7001);
    CHECK(o.name == "b");
    CHECK(o.allow_root);
    CHECK(o.allow_uids == std::vector<std::uint32_t>{7});
    CHECK(parsed({"--allow-uid", "5", "--allow-uid", ""}).allow_uids.empty());
}

TEST_CASE("options: a bad value is refused naming its option and what it takes") {
    struct bad {
        args given;
        std::string says;
    };
    for (auto& [given, says] : std::vector<bad>{
             {{"--listen", "nowhere"}, "--listen takes PORT or ADDR:PORT, not 'nowhere'"},
             {{"--listen", "7000", "--idle-timeout", "soon"}, "--idle-timeout takes a whole number of seconds"},
             {{"--listen", "7000", "--image-timeout", "86401"}, "--image-timeout takes a whole number of seconds"},
             {{"--listen", "7000", "--max-children", "100001"}, "--max-children takes a whole number from 1 to"},
             {{"--listen", "7000", "--max-image-size", "-1"}, "--max-image-size takes a whole number from 1"},
             {{"--listen", "7000", "--child-max-pids", "4194305"}, "--child-max-pids takes a whole number"},
             {{"--listen", "7000", "--allow-uid", "0,5"}, "--allow-uid takes uids other than 0"},
             {{"--listen", "7000", "--local-users", "x"}, "--local-users takes uids other than 0"},
             {{"--listen", "7000", "--ready-fd", "-1"}, "--ready-fd takes a file descriptor number"},
             {{"--listen", "7000", "--name", ""}, "--name needs a non-empty value"},
             {{"--listen", "7000", "--work-dir", "relative"}, "take absolute paths"},
             {{"--listen", "7000", "--cert", "/c"}, "--cert, --key and --ca go together"},
             {{"--listen", "7000", "--cert", "/c", "--key", "/k", "--ca", "/a", "--secret-file", "/s"},
              "--cert, --key and --ca go together"},
             {{"--listen", "7000", "--lisen", "7001"}, "unknown argument '--lisen'"},
             {{"--listen", "7000", "extra"}, "unknown argument 'extra'"},
             {{"--listen", "7000", "--help"}, "unknown argument '--help'"},
             {{"--listen"}, "--listen"},
         }) {
        CAPTURE(given);
        auto error = refused(given);
        CHECK_MESSAGE(error.what.find(says) != std::string::npos, error.what);
    }
}

TEST_CASE("options: a refused value leaves the option as it was") {
    CLI::App app;
    agent_command_line command_line(app);
    parse_in_order(app, {"--idle-timeout", "5", "--allow-uid", "1000"});
    CHECK_THROWS_AS(parse_in_order(app, {"--idle-timeout", "soon"}), CLI::ValidationError);
    CHECK_THROWS_AS(parse_in_order(app, {"--allow-uid", "1001,0"}), CLI::ValidationError);
    CHECK(command_line.values().limits.idle_timeout == std::chrono::seconds(5));
    CHECK(command_line.values().allow_uids == std::vector<std::uint32_t>{1000});
}

TEST_CASE("options: a 0 limit is refused but for a child's own cgroup limits") {
    CHECK(refused({"--listen", "7000", "--max-restores", "0"}).what.starts_with("--max-restores takes"));
    CHECK(parsed({"--child-max-pids", "0"}).limits.child_max_pids == 0);
    CHECK(parsed({"--child-max-memory", "0"}).limits.child_max_memory == 0);
}

TEST_CASE("options: --socket longer than a local socket's address holds is refused at start") {
    std::string longest = "/tmp/" + std::string(max_socket_path - 5, 's');
    REQUIRE(longest.size() == 107);
    CHECK(parsed({"--socket", longest}).socket_path == longest);
    auto error = refused({"--listen", "7000", "--socket", longest + "s"});
    CHECK(error.what.starts_with("--socket "));
    CHECK(error.what.find("108 bytes") != std::string::npos);
    CHECK(error.what.find("at most 107") != std::string::npos);
    CHECK(socket_path_problem(longest).empty());
    SUBCASE("from the environment too") {
        socket_environment set(longest + "s");
        CHECK(refused({"--listen", "7000"}).what.starts_with("--socket "));
    }
}

TEST_CASE("options: without credentials only loopback and the fix names both kinds") {
    auto error = refused({"--listen", "0.0.0.0:7000"});
    CHECK(error.what.find("without credentials") != std::string::npos);
    CHECK(error.fix.find("--secret-file") != std::string::npos);
    CHECK(error.fix.find("keygen --ca") != std::string::npos);
    CHECK(parsed({"--listen", "0.0.0.0:7000", "--secret-file", "/s"}).listen.host == "0.0.0.0");
    CHECK(parsed({"--listen", "0.0.0.0:7000", "--cert", "/c", "--key", "/k", "--ca", "/a"}).cert == "/c");
}

TEST_CASE("options: the kinds a config file knows are the declared ones") {
    CHECK(kind_of_option("listen") == option_kind::takes_value);
    CHECK(kind_of_option("allow-root") == option_kind::flag);
    CHECK(kind_of_option("help") == option_kind::unknown);
    CHECK(kind_of_option("-listen") == option_kind::unknown);
    CHECK(kind_of_option("") == option_kind::unknown);
}

}  // TEST_SUITE
