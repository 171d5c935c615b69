#include "common/agent_command_line.hpp"

#include "common/config.hpp"

#include <rfork/options.hpp>

#include <CLI/CLI.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <functional>
#include <limits>
#include <variant>

namespace rfork::agent {

namespace {

// Sets an option's value from its text, or says what is wrong with the text
// ("takes ..., not '...'"), leaving the value as it was.
using reader = std::function<std::string(const std::string& text)>;

CLI::Option* add_value(CLI::App& app, const std::string& name, const std::string& form, const std::string& help,
                       reader read) {
    auto apply = [name, read = std::move(read)](const std::string& text) {
        if (auto problem = read(text); !problem.empty()) throw CLI::ValidationError(name + " " + problem);
    };
    return app.add_option_function<std::string>(name, apply, help)->type_name(form)->trigger_on_parse();
}

CLI::Option* add_flag(CLI::App& app, const std::string& name, const std::string& help, bool& field, bool value) {
    return app.add_flag_callback(name, [&field, value] { field = value; }, help)->trigger_on_parse();
}

std::string refusal(std::string_view takes, const std::string& text) {
    return fmt::format("takes {}, not '{}'", takes, text);
}

std::optional<std::uint64_t> whole_number(const std::string& text) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
    return n;
}

reader text_into(std::string& field) {
    return [&field](const std::string& text) -> std::string {
        if (text.empty()) return "needs a non-empty value";
        field = text;
        return {};
    };
}

// A count from `least` to `most`. A least of 0 is for a child's own cgroup
// limits, where 0 means none; anywhere else 0 would refuse everything.
template <typename Number>
reader count_into(Number& field, std::uint64_t least, std::uint64_t most = std::numeric_limits<Number>::max()) {
    bool bounded = most != std::numeric_limits<Number>::max();
    auto takes = least == 0  ? fmt::format("a whole number{} (0: no limit of the child's own)",
                                           bounded ? fmt::format(" up to {}", most) : "")
                 : bounded   ? fmt::format("a whole number from {} to {}", least, most)
                             : fmt::format("a whole number from {}", least);
    return [&field, least, most, takes](const std::string& text) -> std::string {
        auto n = whole_number(text);
        if (!n || *n < least || *n > most) return refusal(takes, text);
        field = static_cast<Number>(*n);
        return {};
    };
}

reader seconds_into(std::chrono::seconds& field) {
    constexpr std::uint64_t day = 86400;
    return [&field](const std::string& text) -> std::string {
        auto n = whole_number(text);
        if (!n || *n < 1 || *n > day) return refusal("a whole number of seconds from 1 to 86400", text);
        field = std::chrono::seconds(*n);
        return {};
    };
}

// The last list given is the list, as for every other option.
reader uids_into(std::vector<std::uint32_t>& field) {
    return [&field](const std::string& text) -> std::string {
        std::vector<std::uint32_t> uids;
        for (std::string_view list = text; !list.empty();) {
            auto comma = list.find(',');
            auto item = list.substr(0, comma);
            std::uint32_t uid = 0;
            auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), uid);
            if (ec != std::errc{} || end != item.data() + item.size() || uid == 0)
                return refusal("uids other than 0, comma-separated", text);
            uids.push_back(uid);
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        }
        field = std::move(uids);
        return {};
    };
}

reader endpoint_into(rfork::endpoint& field, bool& given) {
    return [&field, &given](const std::string& text) -> std::string {
        if (auto port = endpoint::parse_port(text)) field = endpoint{"127.0.0.1", *port};
        else if (auto ep = endpoint::parse(text)) field = *ep;
        else return refusal("PORT or ADDR:PORT", text);
        given = true;
        return {};
    };
}

// An absolute path: the agent may change its working directory.
reader absolute_path_into(std::string& field) {
    return [&field](const std::string& text) -> std::string {
        if (text.empty() || text.front() != '/') return refusal("an absolute path", text);
        field = text;
        return {};
    };
}

reader fd_into(int& field) {
    return [&field](const std::string& text) -> std::string {
        int fd = -1;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
        if (ec != std::errc{} || end != text.data() + text.size() || fd < 0)
            return refusal("a file descriptor number", text);
        field = fd;
        return {};
    };
}

std::string size_text(std::uint64_t bytes) {
    return bytes % (1ull << 30) == 0 ? fmt::format("{} GiB", bytes >> 30) : fmt::format("{} bytes", bytes);
}

const options defaults{};

// The declarations, one group of the help each: main's --help lists them so.
void declare_listening(CLI::App& app, options& o, bool& have_listen) {
    const char* group = "Where it listens";
    add_value(app, "--listen", "[ADDR:]PORT", "where other agents connect (ADDR default 127.0.0.1)",
              endpoint_into(o.listen, have_listen))->group(group);
    add_value(app, "--socket", "PATH",
              fmt::format("local programs' socket (default $RFORK_AGENT_SOCKET\nor {}), at most {} bytes",
                          rfork::default_agent_socket, max_socket_path), text_into(o.socket_path))->group(group);
    add_value(app, "--name", "NAME", "this host's name as peers see it (default: hostname;\n"
              "with --cert, its first name; it must be one of them)", text_into(o.name))->group(group);
    add_value(app, "--ready-fd", "FD", "write \"ready\" to FD once listening, then close it",
              fd_into(o.ready_fd))->group(group);
    add_value(app, "--event-log", "FILE", "append one JSON line per event (a fork, a restore,\n"
              "a child's end...) to FILE; README lists them", absolute_path_into(o.event_log))->group(group);
    add_value(app, "--event-fd", "FD", "the same, to FD (inherited, open for writing)",
              fd_into(o.event_fd))->group(group);
}

void declare_credentials(CLI::App& app, options& o) {
    const char* group = "Credentials between agents (with neither, loopback only)";
    add_value(app, "--secret-file", "PATH", "a secret shared by the agents that may fork to each\n"
              "other (rfork-agent keygen PATH): TLS 1.3 between them", text_into(o.secret_file))->group(group);
    add_value(app, "--cert", "FILE", "or certificates: this agent's (keygen --host),",
              text_into(o.cert))->group(group);
    add_value(app, "--key", "FILE", "its key,", text_into(o.key))->group(group);
    add_value(app, "--ca", "FILE", "and the authority whose certificates it accepts\n"
              "(rfork-agent keygen --ca). With neither a secret nor\n"
              "certificates, the agent listens on loopback only, with\n"
              "TLS 1.3 and a secret of this host's own, made beside\n"
              "the local socket (local.secret): agents of this host only", text_into(o.ca))->group(group);
}

void declare_users(CLI::App& app, options& o) {
    const char* group = "Whose processes and requests";
    add_flag(app, "--allow-root", "restore processes that run as root (uid 0); without\nit they are refused",
             o.allow_root, true)->group(group);
    add_value(app, "--allow-uid", "UID,...", "restore the processes of these users (none by default),\n"
              "each as its user, who needs an account here", uids_into(o.allow_uids))->group(group);
    add_value(app, "--local-users", "UID,...", "users besides root who may fork, wait and kill through\n"
              "the local socket (default: root only)", uids_into(o.local_users))->group(group);
}

void declare_places(CLI::App& app, options& o) {
    const char* group = "Files";
    add_value(app, "--criu", "PATH", "the CRIU binary, an ELF executable, not a script\n"
              "(default: $RFORK_CRIU, the one shipped in\n../libexec/rfork beside rfork-agent, or criu on PATH)",
              text_into(o.criu))->group(group);
    add_value(app, "--work-dir", "DIR", fmt::format("checkpoint images in transit (default {})", defaults.work_dir),
              text_into(o.work_dir))->group(group);
    add_value(app, "--file-cache", "DIR", fmt::format("files that processes forked here use and this host\n"
              "lacks, as their agents sent them (default\n{})", defaults.file_cache),
              text_into(o.file_cache))->group(group);
    add_value(app, "--file-cache-size", "B", fmt::format("bytes the file cache keeps, the least recently used\n"
              "going first (default {})", size_text(defaults.limits.file_cache_size)),
              count_into(o.limits.file_cache_size, 1))->group(group);
    add_value(app, "--max-file-size", "B", fmt::format("the largest such file taken; a fork that needs a\n"
              "larger one fails, naming it (default {})", size_text(defaults.limits.max_file_size)),
              count_into(o.limits.max_file_size, 1))->group(group);
}

void declare_children(CLI::App& app, options& o) {
    const char* group = "Children restored here";
    constexpr std::uint64_t pid_max_limit = 4194304;  // the kernel's most (PID_MAX_LIMIT)
    constexpr unsigned most_at_once = 100000;
    add_flag(app, "--no-lazy-pages", "send and take whole images only: a child then runs\n"
             "once all of its memory is here (default: a single-threaded\n"
             "program's child starts first and its memory follows)", o.lazy_pages, false)->group(group);
    add_value(app, "--max-children", "N", fmt::format("children running here at once, those being restored\n"
              "included; more forks are refused (default {})", defaults.limits.max_children),
              count_into(o.limits.max_children, 1, most_at_once))->group(group);
    add_value(app, "--child-max-pids", "N", fmt::format("tasks (processes and threads) each child may have, its\n"
              "pid namespace's init included; 0: no limit of its own\n(default {})", defaults.limits.child_max_pids),
              count_into(o.limits.child_max_pids, 0, pid_max_limit))->group(group);
    add_value(app, "--child-max-memory", "B", fmt::format("bytes of memory (and swap) each child may use; 0: no\n"
              "limit of its own (default {}). Each child runs in a\n"
              "cgroup of its own with these limits, under the agent's",
              size_text(defaults.limits.child_max_memory)), count_into(o.limits.child_max_memory, 0))->group(group);
    add_flag(app, "--allow-unlimited-children", "if this host has no cgroup with the pids and memory\n"
             "controllers for children, restore them without limits\n(default: the agent refuses to start)",
             o.allow_unlimited_children, true)->group(group);
}

void declare_limits(CLI::App& app, limits& bounds) {
    const char* group = "What other agents may send";
    constexpr unsigned most_at_once = 100000;
    add_value(app, "--handshake-timeout", "S", fmt::format("seconds a peer has to send its request (default {})",
              defaults.limits.handshake_timeout.count()), seconds_into(bounds.handshake_timeout))->group(group);
    add_value(app, "--idle-timeout", "S", fmt::format("seconds an image may stall between frames (default {})",
              defaults.limits.idle_timeout.count()), seconds_into(bounds.idle_timeout))->group(group);
    add_value(app, "--image-timeout", "S", fmt::format("seconds an image may take to arrive whole, and a lazy\n"
              "fork's memory after its restore (default {})", defaults.limits.image_timeout.count()),
              seconds_into(bounds.image_timeout))->group(group);
    add_value(app, "--max-image-size", "B", fmt::format("bytes of checkpoint image accepted per fork\n(default {})",
              size_text(defaults.limits.max_image_size)), count_into(bounds.max_image_size, 1))->group(group);
    add_value(app, "--max-image-files", "N", fmt::format("files accepted per image, empty ones too (default {})",
              defaults.limits.max_image_files), count_into(bounds.max_image_files, 1))->group(group);
    add_value(app, "--max-restores", "N", fmt::format("images received or restored at once (default {})",
              defaults.limits.max_restores), count_into(bounds.max_restores, 1, most_at_once))->group(group);
    add_value(app, "--max-pending-connections", "N", fmt::format("connections from other agents still in their\n"
              "TLS and rfork handshakes at once; more are closed on\narrival (default {})",
              defaults.limits.max_pending_connections),
              count_into(bounds.max_pending_connections, 1, most_at_once))->group(group);
    add_value(app, "--max-pending-per-source", "N", fmt::format("the same from one address, or one IPv6 /64\n"
              "(default {})", defaults.limits.max_pending_per_source),
              count_into(bounds.max_pending_per_source, 1, most_at_once))->group(group);
}

}  // namespace

agent_command_line::agent_command_line(CLI::App& app) : app_(app) {
    values_.socket_path = rfork::agent_socket_from_environment();
    app.get_formatter()->column_width(30);
    app.add_option_function<std::string>(
           "--config", [this](const std::string& path) { read_config(path); },
           "options from FILE, one per line without the dashes\n"
           "(\"listen 0.0.0.0:7000\", \"allow-root\"; lines starting\n"
           "with # are comments), read where it stands: later\n"
           "options override its values (a flag, once set, stays\n"
           "set). FILE must be root's and writable by root only")
        ->type_name("FILE")
        ->trigger_on_parse();
    declare_listening(app, values_, have_listen_);
    declare_credentials(app, values_);
    declare_users(app, values_);
    declare_places(app, values_);
    declare_children(app, values_);
    declare_limits(app, values_.limits);
    // Unknown arguments are ours to explain (finish): one may be a removed option.
    app.allow_extras();
}

// Each line as if it stood on the command line here, named in any error.
// Parsed by an App of its own: the outer one is still parsing.
void agent_command_line::read_config(const std::string& path) {
    auto text = read_config_file(path);
    if (auto* e = std::get_if<config_error>(&text)) throw options_refused({path + ": " + e->what, e->fix});
    auto lines = parse_config(std::get<std::string>(text));
    if (auto* e = std::get_if<config_error>(&lines))
        throw options_refused({fmt::format("{}:{}: {}", path, e->line, e->what), e->fix});
    CLI::App file_app;
    agent_command_line in_file(file_app);
    in_file.values_ = values_;
    in_file.have_listen_ = have_listen_;
    for (auto& line : std::get<std::vector<config_line>>(lines)) {
        // NAME=VALUE: a value that starts with a dash is still this option's value.
        auto arg = line.args.size() == 2 ? line.args[0] + "=" + line.args[1] : line.args[0];
        try {
            parse_in_order(file_app, {arg});
        } catch (const CLI::ParseError& e) {
            throw options_refused({fmt::format("{}:{}: {}", path, line.number, e.what()), {}});
        }
    }
    values_ = in_file.values_;
    have_listen_ = in_file.have_listen_;
}

bool agent_command_line::any_given() const {
    return std::ranges::any_of(app_.get_options(), [&](const CLI::Option* o) {
        return o != app_.get_help_ptr() && o->count() > 0;
    }) || !app_.remaining().empty();
}

std::optional<options> agent_command_line::finish(options_error& error, bool listen_required) const {
    if (auto extra = app_.remaining(); !extra.empty()) {
        const auto& arg = extra.front();
        auto removed = arg.starts_with("--") ? removed_option(std::string_view(arg).substr(2)) : std::nullopt;
        error = removed ? *removed : options_error{"unknown argument '" + arg + "'", {}};
        return std::nullopt;
    }
    if (!have_listen_ && listen_required) {
        error = {"--listen is required", {}};
        return std::nullopt;
    }
    if (auto refused = check_options(values_)) {
        error = *refused;
        return std::nullopt;
    }
    return values_;
}

void parse_in_order(CLI::App& app, std::vector<std::string> args) {
    std::reverse(args.begin(), args.end());
    app.parse(args);
}

}  // namespace rfork::agent
