#include "common/options.hpp"

#include "common/agent_command_line.hpp"

#include <CLI/CLI.hpp>

#include <fmt/core.h>

#include <sys/un.h>

namespace rfork::agent {

static_assert(max_socket_path == sizeof(sockaddr_un::sun_path) - 1);

bool is_loopback(const std::string& host) {
    return host.starts_with("127.") || host == "::1" || host == "localhost";
}

namespace {

// Paths a fork's files go through are compared and joined: only absolute ones.
std::optional<options_error> relative_paths(const options& o) {
    if (o.socket_path.empty() || o.socket_path[0] != '/' || o.work_dir[0] != '/' || o.file_cache[0] != '/')
        return options_error{"--socket, --work-dir and --file-cache take absolute paths", {}};
    return std::nullopt;
}

std::optional<options_error> credentials_mixed(const options& o) {
    bool certificates = !o.cert.empty() || !o.key.empty() || !o.ca.empty();
    if (certificates && (o.cert.empty() || o.key.empty() || o.ca.empty() || !o.secret_file.empty()))
        return options_error{"--cert, --key and --ca go together, instead of --secret-file", {}};
    return std::nullopt;
}

// Without credentials, only agents of this host could prove its own secret.
std::optional<options_error> open_without_credentials(const options& o) {
    if (is_loopback(o.listen.host) || !o.secret_file.empty() || !o.cert.empty()) return std::nullopt;
    return options_error{"refusing to listen on " + o.listen.to_string() +
                             " without credentials: only agents of this host could prove its own secret. Give the "
                             "agents a shared secret or certificates, or listen on loopback",
                         "rfork-agent keygen /etc/rfork/secret, copy it to every machine, and add --secret-file "
                         "/etc/rfork/secret (or certificates: rfork-agent keygen --ca DIR, then --host)"};
}

// Events go to one place, never over stdio or the ready fd, which is closed
// once written (its number would then be another file's).
std::optional<options_error> events_misplaced(const options& o) {
    if (o.event_fd >= 0 && !o.event_log.empty())
        return options_error{"--event-fd and --event-log exclude each other", "give one of them"};
    if (o.event_fd >= 0 && o.event_fd <= 2)
        return options_error{"--event-fd may not be stdin, stdout or stderr", "an fd of 3 or more"};
    if (o.event_fd >= 0 && o.event_fd == o.ready_fd)
        return options_error{"--event-fd and --ready-fd must be different fds", "two fds"};
    return std::nullopt;
}

}  // namespace

std::string socket_path_problem(const std::string& path) {
    if (path.size() <= max_socket_path) return {};
    return fmt::format("{} is {} bytes long, and a local socket's path holds at most {} (sockaddr_un)", path,
                       path.size(), max_socket_path);
}

std::optional<options_error> check_options(const options& o) {
    if (auto e = credentials_mixed(o)) return e;
    if (auto e = open_without_credentials(o)) return e;
    if (auto e = relative_paths(o)) return e;
    if (auto e = events_misplaced(o)) return e;
    // Checked here, not where the agent binds: a library's fork builds the
    // same address from it, and must not meet a path it cannot use.
    if (auto problem = socket_path_problem(o.socket_path); !problem.empty())
        return options_error{"--socket " + problem, "a shorter --socket (or $RFORK_AGENT_SOCKET)"};
    return std::nullopt;
}

std::optional<options_error> removed_option(std::string_view name) {
    // Plain TCP let anyone who reached the port (every local user, on
    // loopback) run processes here as root.
    if (name == "insecure")
        return options_error{"--insecure was removed: agents always authenticate (TLS 1.3). Give them a shared "
                             "secret (--secret-file) or certificates (--cert, --key, --ca), or listen on "
                             "loopback, where an agent without credentials uses a secret of this host's own",
                             "rfork-agent keygen /etc/rfork/secret, copy it to every machine, and add --secret-file "
                             "/etc/rfork/secret"};
    return std::nullopt;
}

// From the declarations themselves, so a config file knows what the command line knows.
option_kind kind_of_option(std::string_view name) {
    static CLI::App app;
    static agent_command_line declared(app);
    if (name.empty() || name.starts_with('-')) return option_kind::unknown;
    auto* option = app.get_option_no_throw("--" + std::string(name));
    if (!option || option == app.get_help_ptr()) return option_kind::unknown;
    return option->get_items_expected_max() == 0 ? option_kind::flag : option_kind::takes_value;
}

std::optional<options> parse_options(const std::vector<std::string>& args, options_error& error,
                                     bool listen_required) {
    CLI::App app;
    app.set_help_flag();  // main answers --help; here it is an unknown argument
    agent_command_line command_line(app);
    try {
        parse_in_order(app, args);
    } catch (const options_refused& e) {
        error = e.error;
        return std::nullopt;
    } catch (const CLI::ParseError& e) {
        error = {e.what(), {}};
        return std::nullopt;
    }
    return command_line.finish(error, listen_required);
}

}  // namespace rfork::agent
