#include "options.hpp"

#include <rfork/options.hpp>

#include <charconv>

namespace rfork::agent {

const char* const usage_text =
    "usage: rfork-agent --listen [ADDR:]PORT [options]\n"
    "       rfork-agent list [--socket PATH]          children running on this host\n"
    "       rfork-agent kill ID [--signal N|NAME] [--socket PATH]\n"
    "       rfork-agent keygen PATH                   a new secret for --secret-file\n"
    "       rfork-agent keygen --ca DIR               a new certificate authority\n"
    "       rfork-agent keygen --host NAME --ca DIR OUT   a host's certificate and key\n"
    "\n"
    "Receives processes forked here by other agents, and forks local programs\n"
    "that ask for it (rfork::fork_remote) to other agents.\n"
    "\n"
    "  --listen [ADDR:]PORT  where other agents connect (ADDR default 127.0.0.1)\n"
    "  --secret-file PATH    a secret shared by the agents that may fork to each\n"
    "                        other (rfork-agent keygen PATH): TLS 1.3 between them\n"
    "  --cert FILE --key FILE --ca FILE\n"
    "                        or certificates: this agent's, and the authority whose\n"
    "                        certificates it accepts (rfork-agent keygen --ca/--host)\n"
    "  --allow-root          restore processes that run as root (uid 0); without it\n"
    "                        they are refused\n"
    "  --allow-uid UID,...   restore only processes of these uids (and root with\n"
    "                        --allow-root)\n"
    "  --local-users UID,... users besides root who may fork, wait and kill through\n"
    "                        the local socket (default: root only)\n"
    "  --insecure            allow an ADDR beyond loopback without credentials:\n"
    "                        anyone who reaches it can run processes here as root\n"
    "  --socket PATH         local programs' socket (default $RFORK_AGENT_SOCKET\n"
    "                        or /run/rfork/agent.sock)\n"
    "  --criu PATH           the CRIU binary (default: $RFORK_CRIU, the one\n"
    "                        scripts/setup built, or criu on PATH)\n"
    "  --work-dir DIR        checkpoint images in transit (default /run/rfork/work)\n"
    "  --no-lazy-pages       send and take whole images only: a child then runs once\n"
    "                        all of its memory is here (default: a single-threaded\n"
    "                        program's child starts first and its memory follows)\n"
    "  --name NAME           this host's name as peers see it (default: hostname)\n"
    "  --ready-fd FD         write \"ready\" to FD once listening, then close it\n"
    "  --handshake-timeout S seconds a peer has to send its request (default 10)\n"
    "  --idle-timeout S      seconds an image may stall between frames (default 60)\n"
    "  --max-image-size B    bytes of checkpoint image accepted per fork (default 16 GiB)\n"
    "  --max-restores N      images received or restored at once (default 32)\n"
    "  --help                this text\n";

bool is_loopback(const std::string& host) {
    return host.starts_with("127.") || host == "::1" || host == "localhost";
}

std::optional<options> parse_options(const std::vector<std::string>& args, std::string& error) {
    options o;
    o.socket_path = agent_socket_from_environment();
    bool have_listen = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        auto value = [&]() -> const std::string* {
            if (i + 1 >= args.size()) {
                error = arg + " needs a value";
                return nullptr;
            }
            return &args[++i];
        };
        if (arg == "--listen") {
            auto v = value();
            if (!v) return std::nullopt;
            if (auto port = endpoint::parse_port(*v)) {
                o.listen = endpoint{"127.0.0.1", *port};
            } else if (auto ep = endpoint::parse(*v)) {
                o.listen = *ep;
            } else {
                error = "--listen takes PORT or ADDR:PORT, not '" + *v + "'";
                return std::nullopt;
            }
            have_listen = true;
        } else if (arg == "--socket" || arg == "--criu" || arg == "--work-dir" || arg == "--name" ||
                   arg == "--secret-file" || arg == "--cert" || arg == "--key" || arg == "--ca") {
            auto v = value();
            if (!v) return std::nullopt;
            if (v->empty()) {
                error = arg + " needs a non-empty value";
                return std::nullopt;
            }
            (arg == "--socket"        ? o.socket_path
             : arg == "--criu"        ? o.criu
             : arg == "--work-dir"    ? o.work_dir
             : arg == "--name"        ? o.name
             : arg == "--cert"        ? o.cert
             : arg == "--key"         ? o.key
             : arg == "--ca"          ? o.ca
                                      : o.secret_file) = *v;
        } else if (arg == "--insecure") {
            o.insecure = true;
        } else if (arg == "--allow-root") {
            o.allow_root = true;
        } else if (arg == "--no-lazy-pages") {
            o.lazy_pages = false;
        } else if (arg == "--allow-uid" || arg == "--local-users") {
            auto v = value();
            if (!v) return std::nullopt;
            auto& uids = arg == "--allow-uid" ? o.allow_uids : o.local_users;
            std::string_view list = *v;
            while (!list.empty()) {
                auto comma = list.find(',');
                auto item = list.substr(0, comma);
                std::uint32_t uid = 0;
                auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), uid);
                if (ec != std::errc{} || end != item.data() + item.size() || uid == 0) {
                    error = arg + " takes uids other than 0, comma-separated, not '" + *v + "'";
                    return std::nullopt;
                }
                uids.push_back(uid);
                list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            }
        } else if (arg == "--handshake-timeout" || arg == "--idle-timeout" || arg == "--max-image-size" ||
                   arg == "--max-restores") {
            auto v = value();
            if (!v) return std::nullopt;
            std::uint64_t n = 0;
            auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
            bool seconds = arg.ends_with("timeout");
            if (ec != std::errc{} || end != v->data() + v->size() || (seconds && (n == 0 || n > 86400)) ||
                (arg == "--max-restores" && n > 100000)) {
                error = arg + " takes a whole number" + (seconds ? " of seconds from 1 to 86400" : "") + ", not '" + *v + "'";
                return std::nullopt;
            }
            if (arg == "--handshake-timeout") o.limits.handshake_timeout = std::chrono::seconds(n);
            else if (arg == "--idle-timeout") o.limits.idle_timeout = std::chrono::seconds(n);
            else if (arg == "--max-image-size") o.limits.max_image_size = n;
            else o.limits.max_restores = static_cast<unsigned>(n);
        } else if (arg == "--ready-fd") {
            auto v = value();
            if (!v) return std::nullopt;
            auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), o.ready_fd);
            if (ec != std::errc{} || end != v->data() + v->size() || o.ready_fd < 0) {
                error = "--ready-fd takes a file descriptor number, not '" + *v + "'";
                return std::nullopt;
            }
        } else {
            error = "unknown argument '" + arg + "'";
            return std::nullopt;
        }
    }
    if (!have_listen) {
        error = "--listen is required";
        return std::nullopt;
    }
    bool certificates = !o.cert.empty() || !o.key.empty() || !o.ca.empty();
    if (certificates && (o.cert.empty() || o.key.empty() || o.ca.empty() || !o.secret_file.empty())) {
        error = "--cert, --key and --ca go together, instead of --secret-file";
        return std::nullopt;
    }
    if (!is_loopback(o.listen.host) && !o.insecure && o.secret_file.empty() && !certificates) {
        error = "refusing to listen on " + o.listen.to_string() +
                " without credentials: anyone who reaches it could run processes here as root. "
                "Listen on loopback, or pass --insecure on a network you trust";
        return std::nullopt;
    }
    if (o.socket_path.empty() || o.socket_path[0] != '/' || o.work_dir[0] != '/') {
        error = "--socket and --work-dir take absolute paths";
        return std::nullopt;
    }
    return o;
}

}  // namespace rfork::agent
