// The agent's options from a file (--config): the pure parser of its text,
// the refusal of files that others could change, and where a file's options
// stand among those of the command line.
#include "common/config.hpp"
#include "common/options.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

using namespace rfork::agent;
namespace fs = std::filesystem;
using args = std::vector<std::string>;

namespace {

std::vector<config_line> lines_of(std::string_view text) {
    auto parsed = parse_config(text);
    if (auto* e = std::get_if<config_error>(&parsed)) FAIL("line " << e->line << ": " << e->what);
    return std::get<std::vector<config_line>>(parsed);
}

config_error error_of(std::string_view text) {
    auto parsed = parse_config(text);
    REQUIRE(std::holds_alternative<config_error>(parsed));
    return std::get<config_error>(parsed);
}

// A file in a directory of its own, removed with it.
struct temp_file {
    fs::path dir;
    std::string path;
    temp_file(const std::string& text, fs::perms mode) {
        char pattern[] = "/tmp/rfork-config-test-XXXXXX";
        REQUIRE(::mkdtemp(pattern));
        dir = pattern;
        path = (dir / "agent.conf").string();
        std::ofstream(path) << text;
        fs::permissions(path, mode);
    }
    ~temp_file() { fs::remove_all(dir); }
};

constexpr auto private_mode = fs::perms::owner_read | fs::perms::owner_write;

}  // namespace

TEST_SUITE("unit.config") {

TEST_CASE("config: each line is an option without its dashes and then its value") {
    auto lines = lines_of("listen 0.0.0.0:7000\nsecret-file /etc/rfork/secret\nallow-root\nallow-uid 1000,1001\n");
    REQUIRE(lines.size() == 4);
    CHECK(lines[0].number == 1);
    CHECK(lines[0].args == args{"--listen", "0.0.0.0:7000"});
    CHECK(lines[1].args == args{"--secret-file", "/etc/rfork/secret"});
    CHECK(lines[2].args == args{"--allow-root"});
    CHECK(lines[3].number == 4);
    CHECK(lines[3].args == args{"--allow-uid", "1000,1001"});
}

TEST_CASE("config: comments and blank lines and surrounding whitespace are ignored") {
    auto lines = lines_of("# rfork\n\n   \t\n  # indented comment\n\t listen \t 7000  \r\nname a\n# the end");
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].number == 5);
    CHECK(lines[0].args == args{"--listen", "7000"});
    CHECK(lines[1].number == 6);
    CHECK(lines[1].args == args{"--name", "a"});
    CHECK(lines_of("").empty());
    CHECK(lines_of("\n\n# nothing\n").empty());
}

TEST_CASE("config: the value is the rest of the line with its spaces") {
    auto lines = lines_of("work-dir /srv/rfork images/in transit \nname  # not a comment here");
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].args == args{"--work-dir", "/srv/rfork images/in transit"});
    CHECK(lines[1].args == args{"--name", "# not a comment here"});
}

TEST_CASE("config: refusals name the line") {
    SUBCASE("an unknown option") {
        auto e = error_of("listen 7000\n\nlisen 7001\n");
        CHECK(e.line == 3);
        CHECK(e.what == "unknown option 'lisen'");
    }
    SUBCASE("an option written with its dashes") {
        auto e = error_of("--listen 7000");
        CHECK(e.line == 1);
        CHECK(e.what.find("without their dashes: 'listen'") != std::string::npos);
    }
    SUBCASE("a missing value") {
        auto e = error_of("# x\nsecret-file   \n");
        CHECK(e.line == 2);
        CHECK(e.what == "'secret-file' needs a value");
    }
    SUBCASE("a value for a flag") {
        auto e = error_of("allow-root yes");
        CHECK(e.what == "'allow-root' takes no value, not 'yes'");
    }
    SUBCASE("a config file inside a config file") {
        auto e = error_of("listen 7000\nconfig /etc/rfork/other.conf");
        CHECK(e.line == 2);
        CHECK(e.what.find("cannot name another") != std::string::npos);
    }
    SUBCASE("options of the command line only") {
        CHECK(error_of("help").what == "unknown option 'help'");
        CHECK(error_of("doctor").what == "unknown option 'doctor'");
    }
    SUBCASE("a NUL byte") {
        using namespace std::string_view_literals;
        CHECK(error_of("listen 7000\nname a\0b"sv).line == 2);
    }
}

TEST_CASE("config: every option of the agent is known with or without a value") {
    for (auto name : {"listen", "secret-file", "cert", "key", "ca", "allow-uid", "local-users", "socket", "criu",
                      "work-dir", "name", "ready-fd", "handshake-timeout", "idle-timeout", "image-timeout",
                      "max-image-size",
                      "max-restores", "max-image-files", "max-pending-connections",
                      "max-pending-per-source", "max-children", "child-max-pids", "child-max-memory", "config"}) {
        CAPTURE(name);
        CHECK(kind_of_option(name) == option_kind::takes_value);
    }
    for (auto name : {"allow-root", "no-lazy-pages", "allow-unlimited-children"}) {
        CAPTURE(name);
        CHECK(kind_of_option(name) == option_kind::flag);
    }
    for (auto name : {"", "help", "--listen", "peer", "Listen", "insecure"}) {
        CAPTURE(name);
        CHECK(kind_of_option(name) == option_kind::unknown);
    }
}

TEST_CASE("config: a file others could change is refused with the command that fixes it") {
    SUBCASE("writable by group") {
        temp_file f("listen 7000\n", private_mode | fs::perms::group_write);
        auto read = read_config_file(f.path);
        REQUIRE(std::holds_alternative<config_error>(read));
        auto& e = std::get<config_error>(read);
        CHECK(e.line == 0);
        // Not root, the file is also not root's: then both are fixed at once.
        CHECK(e.fix.find("chmod go-w " + f.path) != std::string::npos);
        if (::geteuid() == 0) CHECK(e.what.find("writable by group or others (mode 0620)") != std::string::npos);
    }
    SUBCASE("writable by others") {
        temp_file f("listen 7000\n", private_mode | fs::perms::others_write);
        auto read = read_config_file(f.path);
        REQUIRE(std::holds_alternative<config_error>(read));
        CHECK(std::get<config_error>(read).fix.find("chmod go-w") != std::string::npos);
    }
    SUBCASE("not root's") {
        temp_file f("listen 7000\n", private_mode);
        if (::geteuid() == 0) REQUIRE(::chown(f.path.c_str(), 4242, 4242) == 0);
        auto read = read_config_file(f.path);
        REQUIRE(std::holds_alternative<config_error>(read));
        auto& e = std::get<config_error>(read);
        CHECK(e.what.find("not root") != std::string::npos);
        CHECK(e.fix == "chown root " + f.path);
    }
    SUBCASE("not a regular file") {
        temp_file f("", private_mode);
        auto read = read_config_file(f.dir.string());
        REQUIRE(std::holds_alternative<config_error>(read));
        CHECK(std::get<config_error>(read).what == "not a regular file");
    }
    SUBCASE("missing") {
        auto read = read_config_file("/nonexistent/rfork/agent.conf");
        REQUIRE(std::holds_alternative<config_error>(read));
        CHECK(std::get<config_error>(read).what.find("No such file") != std::string::npos);
    }
}

TEST_CASE("config: parse_options reads it where --config stands and names the file in errors") {
    SUBCASE("a refused file") {
        temp_file f("listen 7000\n", private_mode | fs::perms::group_write);
        options_error error;
        CHECK_FALSE(parse_options({"--config", f.path}, error));
        CHECK(error.what.starts_with(f.path + ": "));
        CHECK(error.fix.find("chmod go-w") != std::string::npos);
    }
    SUBCASE("--config needs a value") {
        options_error error;
        CHECK_FALSE(parse_options({"--listen", "7000", "--config"}, error));
        CHECK(error.what.starts_with("--config: "));  // CLI11's words: "1 required FILE missing"
        CHECK(error.what.find("missing") != std::string::npos);
    }
    if (::geteuid() != 0) {
        MESSAGE("not root: a config file of root's cannot be made here, the rest is skipped");
        return;
    }
    SUBCASE("its options, as on the command line") {
        temp_file f("listen 0.0.0.0:7000\nsecret-file /etc/rfork/my secret\nallow-root\nallow-uid 1000,1001\n",
                    private_mode);
        options_error error;
        auto o = parse_options({"--config", f.path}, error);
        REQUIRE_MESSAGE(o, error.what);
        CHECK(o->listen.to_string() == "0.0.0.0:7000");
        CHECK(o->secret_file == "/etc/rfork/my secret");
        CHECK(o->allow_root);
        CHECK(o->allow_uids == std::vector<std::uint32_t>{1000, 1001});
    }
    SUBCASE("options after it override it, options before it are overridden") {
        temp_file f("listen 7000\nname from-file\n", private_mode);
        options_error error;
        auto after = parse_options({"--config", f.path, "--listen", "7001"}, error);
        REQUIRE_MESSAGE(after, error.what);
        CHECK(after->listen.port == 7001);
        CHECK(after->name == "from-file");
        auto before = parse_options({"--listen", "7001", "--name", "x", "--config", f.path}, error);
        REQUIRE_MESSAGE(before, error.what);
        CHECK(before->listen.port == 7000);
        CHECK(before->name == "from-file");
    }
    SUBCASE("an unknown option names the file and the line") {
        temp_file f("# agent\nlisten 7000\nlisen 7001\n", private_mode);
        options_error error;
        CHECK_FALSE(parse_options({"--config", f.path}, error));
        CHECK(error.what == f.path + ":3: unknown option 'lisen'");
    }
    SUBCASE("a bad value names the file and the line") {
        temp_file f("listen 7000\nidle-timeout soon\n", private_mode);
        options_error error;
        CHECK_FALSE(parse_options({"--config", f.path}, error));
        CHECK(error.what.starts_with(f.path + ":2: --idle-timeout takes a whole number"));
    }
    SUBCASE("the agent's own checks still apply") {
        temp_file f("listen 0.0.0.0:7000\n", private_mode);
        options_error error;
        CHECK_FALSE(parse_options({"--config", f.path}, error));
        CHECK(error.what.find("without credentials") != std::string::npos);
        CHECK(error.fix.find("rfork-agent keygen") != std::string::npos);
    }
}

TEST_CASE("config: --image-timeout bounds an image's whole arrival and has a default of an hour") {
    options_error error;
    auto defaults = parse_options({"--listen", "7000"}, error);
    REQUIRE(defaults);
    CHECK(defaults->limits.image_timeout == std::chrono::seconds(3600));
    auto set = parse_options({"--listen", "7000", "--image-timeout", "5"}, error);
    REQUIRE(set);
    CHECK(set->limits.image_timeout == std::chrono::seconds(5));
    for (auto bad : {"0", "86401", "x", "-1"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_options({"--listen", "7000", "--image-timeout", bad}, error));
    }
}

TEST_CASE("config: --insecure was removed and says what to do instead") {
    SUBCASE("on the command line") {
        options_error error;
        CHECK_FALSE(parse_options({"--listen", "0.0.0.0:7000", "--insecure"}, error));
        CHECK(error.what.starts_with("--insecure was removed: agents always authenticate"));
        CHECK(error.what.find("--secret-file") != std::string::npos);
        CHECK(error.fix.find("rfork-agent keygen /etc/rfork/secret") != std::string::npos);
    }
    SUBCASE("on loopback too, where it never was needed") {
        options_error error;
        CHECK_FALSE(parse_options({"--listen", "7000", "--insecure"}, error));
        CHECK(error.what.starts_with("--insecure was removed"));
    }
    SUBCASE("in a config file, with its line") {
        auto e = error_of("listen 0.0.0.0:7000\ninsecure\n");
        CHECK(e.line == 2);
        CHECK(e.what.starts_with("--insecure was removed"));
        CHECK(e.fix.find("rfork-agent keygen") != std::string::npos);
    }
    SUBCASE("beyond loopback, no credentials is refused with the way to give some") {
        options_error error;
        CHECK_FALSE(parse_options({"--listen", "0.0.0.0:7000"}, error));
        CHECK(error.what.find("without credentials") != std::string::npos);
        CHECK(error.what.find("--insecure") == std::string::npos);  // no way out without credentials
        CHECK(error.fix.find("--secret-file") != std::string::npos);
    }
    SUBCASE("on loopback, no credentials is fine: the agent uses its host's own secret") {
        options_error error;
        auto o = parse_options({"--listen", "7000"}, error);
        REQUIRE_MESSAGE(o, error.what);
        CHECK(o->secret_file.empty());
        CHECK(o->cert.empty());
    }
}

TEST_CASE("config: children's limits have defaults and 0 means no limit of a child's own") {
    options_error error;
    auto defaults = parse_options({"--listen", "7000"}, error);
    REQUIRE(defaults);
    CHECK(defaults->limits.max_children == 64);
    CHECK(defaults->limits.child_max_pids == 1024);
    CHECK(defaults->limits.child_max_memory == 4ull << 30);
    CHECK_FALSE(defaults->allow_unlimited_children);
    auto set = parse_options({"--listen", "7000", "--max-children", "3", "--child-max-pids", "0", "--child-max-memory",
                              "0", "--allow-unlimited-children"},
                             error);
    REQUIRE(set);
    CHECK(set->limits.max_children == 3);
    CHECK(set->limits.child_max_pids == 0);
    CHECK(set->limits.child_max_memory == 0);
    CHECK(set->allow_unlimited_children);
}

TEST_CASE("config: --listen may be left out only where the caller says so (doctor)") {
    options_error error;
    CHECK_FALSE(parse_options({}, error));
    CHECK(error.what == "--listen is required");
    auto o = parse_options({}, error, false);
    REQUIRE(o);
    CHECK(o->listen.to_string() == "127.0.0.1:7000");
}

}  // TEST_SUITE

TEST_CASE("config: a limit of 0 is refused for it would refuse everything") {
    for (const char* limit : {"--handshake-timeout", "--idle-timeout", "--max-image-size", "--max-restores",
                              "--max-pending-connections", "--max-pending-per-source", "--max-image-files",
                              "--max-children", "--image-timeout"}) {
        CAPTURE(limit);
        options_error error;
        CHECK_FALSE(parse_options({"--listen", "7000", limit, "0"}, error));
        CHECK(error.what.starts_with(std::string(limit) + " takes a whole number"));
        CHECK(parse_options({"--listen", "7000", limit, "1"}, error));
    }
}
