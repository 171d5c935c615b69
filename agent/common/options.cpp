#include "common/options.hpp"

#include "common/config.hpp"

#include <rfork/options.hpp>

#include <algorithm>
#include <charconv>
#include <variant>

namespace rfork::agent {

const char* const usage_text =
    "usage: rfork-agent --listen [ADDR:]PORT [options]\n"
    "       rfork-agent --config FILE [options]\n"
    "       rfork-agent doctor [options | --config FILE] [--peer HOST:PORT ...]\n"
    "                                                 checks this host and its peers\n"
    "       rfork-agent list [--socket PATH]          children running on this host\n"
    "       rfork-agent kill ID [--signal N|NAME] [--socket PATH]\n"
    "       rfork-agent keygen PATH                   a new secret for --secret-file\n"
    "       rfork-agent keygen --ca DIR               a new certificate authority\n"
    "       rfork-agent keygen --host NAME [--host NAME ...] --ca DIR OUT\n"
    "                                                 a host's certificate and key, naming\n"
    "                                                 each NAME (a host name or address)\n"
    "\n"
    "Receives processes forked here by other agents, and forks local programs\n"
    "that ask for it (rfork::fork_remote) to other agents.\n"
    "\n"
    "  --config FILE         options from FILE, one per line without the dashes\n"
    "                        (\"listen 0.0.0.0:7000\", \"allow-root\"; lines starting\n"
    "                        with # are comments), read where it stands: later\n"
    "                        options override its values (a flag, once set, stays\n"
    "                        set). FILE must be root's and writable by root only\n"
    "  --listen [ADDR:]PORT  where other agents connect (ADDR default 127.0.0.1)\n"
    "  --secret-file PATH    a secret shared by the agents that may fork to each\n"
    "                        other (rfork-agent keygen PATH): TLS 1.3 between them\n"
    "  --cert FILE --key FILE --ca FILE\n"
    "                        or certificates: this agent's, and the authority whose\n"
    "                        certificates it accepts (rfork-agent keygen --ca/--host).\n"
    "                        With neither, the agent listens on loopback only, with\n"
    "                        TLS 1.3 and a secret of this host's own, made beside\n"
    "                        the local socket (local.secret): agents of this host only\n"
    "  --allow-root          restore processes that run as root (uid 0); without it\n"
    "                        they are refused\n"
    "  --allow-uid UID,...   restore the processes of these users (none by default),\n"
    "                        each as its user, who needs an account here\n"
    "  --local-users UID,... users besides root who may fork, wait and kill through\n"
    "                        the local socket (default: root only)\n"
    "  --socket PATH         local programs' socket (default $RFORK_AGENT_SOCKET\n"
    "                        or /run/rfork/agent.sock)\n"
    "  --criu PATH           the CRIU binary, an ELF executable, not a script\n"
    "                        (default: $RFORK_CRIU, the one shipped in\n"
    "                        ../libexec/rfork beside rfork-agent, or criu on PATH)\n"
    "  --work-dir DIR        checkpoint images in transit (default /run/rfork/work)\n"
    "  --file-cache DIR      files that processes forked here use and this host\n"
    "                        lacks, as their agents sent them (default\n"
    "                        /var/cache/rfork/files)\n"
    "  --file-cache-size B   bytes the file cache keeps, the least recently used\n"
    "                        going first (default 4 GiB)\n"
    "  --max-file-size B     the largest such file taken; a fork that needs a larger\n"
    "                        one fails, naming it (default 1 GiB)\n"
    "  --no-lazy-pages       send and take whole images only: a child then runs once\n"
    "                        all of its memory is here (default: a single-threaded\n"
    "                        program's child starts first and its memory follows)\n"
    "  --name NAME           this host's name as peers see it (default: hostname;\n"
    "                        with --cert, its first name, and it must be one of them)\n"
    "  --ready-fd FD         write \"ready\" to FD once listening, then close it\n"
    "  --handshake-timeout S seconds a peer has to send its request (default 10)\n"
    "  --idle-timeout S      seconds an image may stall between frames (default 60)\n"
    "  --image-timeout S     seconds an image may take to arrive whole, and a lazy\n"
    "                        fork's memory after its restore (default 3600)\n"
    "  --max-image-size B    bytes of checkpoint image accepted per fork (default 16 GiB)\n"
    "  --max-restores N      images received or restored at once (default 32)\n"
    "  --max-pending-connections N\n"
    "                        connections from other agents still in their TLS and\n"
    "                        rfork handshakes at once; more are closed on arrival\n"
    "                        (default 64)\n"
    "  --max-pending-per-source N\n"
    "                        the same from one address, or one IPv6 /64 (default 16)\n"
    "  --max-image-files N   files accepted per image, empty ones too (default 16384)\n"
    "  --max-children N      children running here at once, those being restored\n"
    "                        included; more forks are refused (default 64)\n"
    "  --child-max-pids N    tasks (processes and threads) each child may have, its\n"
    "                        pid namespace's init included; 0: no limit of its own\n"
    "                        (default 1024)\n"
    "  --child-max-memory B  bytes of memory (and swap) each child may use; 0: no\n"
    "                        limit of its own (default 4 GiB). Each child runs in a\n"
    "                        cgroup of its own with these limits, under the agent's\n"
    "  --allow-unlimited-children\n"
    "                        if this host has no cgroup with the pids and memory\n"
    "                        controllers for children, restore them without limits\n"
    "                        (default: the agent refuses to start)\n"
    "  --help                this text\n";

bool is_loopback(const std::string& host) {
    return host.starts_with("127.") || host == "::1" || host == "localhost";
}

namespace {

struct option_spec {
    std::string_view name;
    option_kind kind;
};

constexpr option_spec known_options[] = {
    {"listen", option_kind::takes_value},        {"config", option_kind::takes_value},
    {"secret-file", option_kind::takes_value},   {"cert", option_kind::takes_value},
    {"key", option_kind::takes_value},           {"ca", option_kind::takes_value},
    {"allow-root", option_kind::flag},           {"allow-uid", option_kind::takes_value},
    {"local-users", option_kind::takes_value},   {"socket", option_kind::takes_value},
    {"criu", option_kind::takes_value},
    {"work-dir", option_kind::takes_value},      {"no-lazy-pages", option_kind::flag},
    {"file-cache", option_kind::takes_value},    {"file-cache-size", option_kind::takes_value},
    {"max-file-size", option_kind::takes_value},
    {"name", option_kind::takes_value},          {"ready-fd", option_kind::takes_value},
    {"handshake-timeout", option_kind::takes_value}, {"idle-timeout", option_kind::takes_value},
    {"image-timeout", option_kind::takes_value},
    {"max-image-size", option_kind::takes_value},    {"max-restores", option_kind::takes_value},
    {"max-pending-connections", option_kind::takes_value},
    {"max-pending-per-source", option_kind::takes_value},
    {"max-image-files", option_kind::takes_value},   {"max-children", option_kind::takes_value},
    {"child-max-pids", option_kind::takes_value},    {"child-max-memory", option_kind::takes_value},
    {"allow-unlimited-children", option_kind::flag},
};

struct parser {
    options o;
    bool have_listen = false;

    // One option (with its dashes); `value` is null for a flag. Returns an error, or empty.
    std::string apply(const std::string& arg, const std::string* value);
    // Options as on a command line; `where` prefixes errors ("FILE:LINE: ").
    bool parse(const std::vector<std::string>& args, const std::string& where, bool in_config, options_error& error);
    bool read_config(const std::string& path, options_error& error);
};

std::string parser::apply(const std::string& arg, const std::string* value) {
    auto bad = [&](std::string_view takes) { return arg + " takes " + std::string(takes) + ", not '" + *value + "'"; };
    if (arg == "--listen") {
        if (auto port = endpoint::parse_port(*value)) {
            o.listen = endpoint{"127.0.0.1", *port};
        } else if (auto ep = endpoint::parse(*value)) {
            o.listen = *ep;
        } else {
            return bad("PORT or ADDR:PORT");
        }
        have_listen = true;
    } else if (arg == "--socket" || arg == "--criu" || arg == "--work-dir" || arg == "--name" ||
               arg == "--file-cache" || arg == "--secret-file" || arg == "--cert" || arg == "--key" || arg == "--ca") {
        if (value->empty()) return arg + " needs a non-empty value";
        (arg == "--socket"     ? o.socket_path
         : arg == "--criu"     ? o.criu
         : arg == "--work-dir" ? o.work_dir
         : arg == "--file-cache" ? o.file_cache
         : arg == "--name"     ? o.name
         : arg == "--cert"     ? o.cert
         : arg == "--key"      ? o.key
         : arg == "--ca"       ? o.ca
                               : o.secret_file) = *value;
    } else if (arg == "--allow-root") {
        o.allow_root = true;
    } else if (arg == "--no-lazy-pages") {
        o.lazy_pages = false;
    } else if (arg == "--allow-unlimited-children") {
        o.allow_unlimited_children = true;
    } else if (arg == "--allow-uid" || arg == "--local-users") {
        auto& uids = arg == "--allow-uid" ? o.allow_uids : o.local_users;
        uids.clear();  // the last list given is the list, as for every other option
        std::string_view list = *value;
        while (!list.empty()) {
            auto comma = list.find(',');
            auto item = list.substr(0, comma);
            std::uint32_t uid = 0;
            auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), uid);
            if (ec != std::errc{} || end != item.data() + item.size() || uid == 0)
                return bad("uids other than 0, comma-separated");
            uids.push_back(uid);
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        }
    } else if (arg == "--handshake-timeout" || arg == "--idle-timeout" || arg == "--image-timeout" ||
               arg == "--max-image-size" ||
               arg == "--max-pending-connections" || arg == "--max-pending-per-source" ||
               arg == "--max-restores" || arg == "--max-image-files" || arg == "--max-children" ||
               arg == "--child-max-pids" || arg == "--child-max-memory" || arg == "--file-cache-size" ||
               arg == "--max-file-size") {
        std::uint64_t n = 0;
        auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
        bool seconds = arg.ends_with("timeout");
        // 0 would not mean "no limit" (it would refuse everything, or time out at
        // once), but for a child's own cgroup limits, where it means none of its own.
        bool zero_means_none = arg == "--child-max-pids" || arg == "--child-max-memory";
        if (ec != std::errc{} || end != value->data() + value->size() || (n == 0 && !zero_means_none) ||
            (seconds && n > 86400) ||
            ((arg == "--max-restores" || arg == "--max-children" || arg.starts_with("--max-pending-")) &&
             n > 100000) ||
            (arg == "--child-max-pids" && n > 4194304))  // the kernel's most (PID_MAX_LIMIT)
            return bad(seconds                ? "a whole number of seconds from 1 to 86400"
                       : zero_means_none      ? "a whole number (0: no limit of the child's own)"
                                              : "a whole number from 1");
        if (arg == "--handshake-timeout") o.limits.handshake_timeout = std::chrono::seconds(n);
        else if (arg == "--idle-timeout") o.limits.idle_timeout = std::chrono::seconds(n);
        else if (arg == "--image-timeout") o.limits.image_timeout = std::chrono::seconds(n);
        else if (arg == "--max-image-size") o.limits.max_image_size = n;
        else if (arg == "--max-pending-connections") o.limits.max_pending_connections = static_cast<unsigned>(n);
        else if (arg == "--max-pending-per-source") o.limits.max_pending_per_source = static_cast<unsigned>(n);
        else if (arg == "--max-image-files") o.limits.max_image_files = n;
        else if (arg == "--max-children") o.limits.max_children = static_cast<unsigned>(n);
        else if (arg == "--child-max-pids") o.limits.child_max_pids = n;
        else if (arg == "--child-max-memory") o.limits.child_max_memory = n;
        else if (arg == "--file-cache-size") o.limits.file_cache_size = n;
        else if (arg == "--max-file-size") o.limits.max_file_size = n;
        else o.limits.max_restores = static_cast<unsigned>(n);
    } else if (arg == "--ready-fd") {
        auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), o.ready_fd);
        if (ec != std::errc{} || end != value->data() + value->size() || o.ready_fd < 0)
            return bad("a file descriptor number");
    }
    return {};
}

bool parser::parse(const std::vector<std::string>& args, const std::string& where, bool in_config,
                   options_error& error) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg.starts_with("--")) {
            if (auto removed = removed_option(std::string_view(arg).substr(2))) {
                error = {where + removed->what, removed->fix};
                return false;
            }
        }
        auto kind = arg.starts_with("--") ? kind_of_option(std::string_view(arg).substr(2)) : option_kind::unknown;
        if (kind == option_kind::unknown) {
            error = {where + "unknown argument '" + arg + "'", {}};
            return false;
        }
        const std::string* value = nullptr;
        if (kind == option_kind::takes_value) {
            if (i + 1 >= args.size()) {
                error = {where + arg + " needs a value", {}};
                return false;
            }
            value = &args[++i];
        }
        if (arg == "--config") {
            if (in_config) {  // parse_config refuses it first; no nesting, no loops
                error = {where + "a config file cannot name another (--config)", {}};
                return false;
            }
            if (!read_config(*value, error)) return false;
            continue;
        }
        if (auto problem = apply(arg, value); !problem.empty()) {
            error = {where + problem, {}};
            return false;
        }
    }
    return true;
}

bool parser::read_config(const std::string& path, options_error& error) {
    auto text = read_config_file(path);
    if (auto* e = std::get_if<config_error>(&text)) {
        error = {path + ": " + e->what, e->fix};
        return false;
    }
    auto lines = parse_config(std::get<std::string>(text));
    if (auto* e = std::get_if<config_error>(&lines)) {
        error = {path + ":" + std::to_string(e->line) + ": " + e->what, e->fix};
        return false;
    }
    for (auto& line : std::get<std::vector<config_line>>(lines))
        if (!parse(line.args, path + ":" + std::to_string(line.number) + ": ", true, error)) return false;
    return true;
}

}  // namespace

std::optional<options_error> removed_option(std::string_view name) {
    // Plain TCP let anyone who reached the port (every local user, on
    // loopback) run processes here as root.
    if (name == "insecure")
        return options_error{"--insecure was removed: agents always authenticate (TLS 1.3). Give them a shared "
                             "secret (--secret-file), or listen on loopback, where an agent without credentials "
                             "uses a secret of this host's own",
                             "rfork-agent keygen /etc/rfork/secret, copy it to every machine, and add --secret-file "
                             "/etc/rfork/secret"};
    return std::nullopt;
}

option_kind kind_of_option(std::string_view name) {
    auto found = std::find_if(std::begin(known_options), std::end(known_options),
                              [&](const option_spec& spec) { return spec.name == name; });
    return found == std::end(known_options) ? option_kind::unknown : found->kind;
}

std::optional<options> parse_options(const std::vector<std::string>& args, options_error& error,
                                     bool listen_required) {
    parser p;
    p.o.socket_path = agent_socket_from_environment();
    if (!p.parse(args, "", false, error)) return std::nullopt;
    options& o = p.o;
    if (!p.have_listen && listen_required) {
        error = {"--listen is required", {}};
        return std::nullopt;
    }
    bool certificates = !o.cert.empty() || !o.key.empty() || !o.ca.empty();
    if (certificates && (o.cert.empty() || o.key.empty() || o.ca.empty() || !o.secret_file.empty())) {
        error = {"--cert, --key and --ca go together, instead of --secret-file", {}};
        return std::nullopt;
    }
    if (!is_loopback(o.listen.host) && o.secret_file.empty() && !certificates) {
        error = {"refusing to listen on " + o.listen.to_string() +
                     " without credentials: only agents of this host could prove its own secret. Give the "
                     "agents a shared secret or certificates, or listen on loopback",
                 "rfork-agent keygen /etc/rfork/secret, copy it to every machine, and add --secret-file "
                 "/etc/rfork/secret"};
        return std::nullopt;
    }
    if (o.socket_path.empty() || o.socket_path[0] != '/' || o.work_dir[0] != '/' || o.file_cache[0] != '/') {
        error = {"--socket, --work-dir and --file-cache take absolute paths", {}};
        return std::nullopt;
    }
    return o;
}

}  // namespace rfork::agent
