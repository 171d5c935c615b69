#include "options.hpp"

#include <rfork/options.hpp>

#include <charconv>

namespace rfork::agent {

const char* const usage_text =
    "usage: rfork-agent --listen [ADDR:]PORT [options]\n"
    "       rfork-agent list [--socket PATH]          children running on this host\n"
    "       rfork-agent kill ID [--signal N|NAME] [--socket PATH]\n"
    "\n"
    "Receives processes forked here by other agents, and forks local programs\n"
    "that ask for it (rfork::fork_remote) to other agents.\n"
    "\n"
    "  --listen [ADDR:]PORT  where other agents connect (ADDR default 0.0.0.0)\n"
    "  --socket PATH         local programs' socket (default $RFORK_AGENT_SOCKET\n"
    "                        or /run/rfork/agent.sock)\n"
    "  --criu PATH           the CRIU binary (default: $RFORK_CRIU, the one\n"
    "                        scripts/setup built, or criu on PATH)\n"
    "  --work-dir DIR        checkpoint images in transit (default /run/rfork/work)\n"
    "  --name NAME           this host's name as peers see it (default: hostname)\n"
    "  --ready-fd FD         write \"ready\" to FD once listening, then close it\n"
    "  --help                this text\n";

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
                o.listen = endpoint{"0.0.0.0", *port};
            } else if (auto ep = endpoint::parse(*v)) {
                o.listen = *ep;
            } else {
                error = "--listen takes PORT or ADDR:PORT, not '" + *v + "'";
                return std::nullopt;
            }
            have_listen = true;
        } else if (arg == "--socket" || arg == "--criu" || arg == "--work-dir" || arg == "--name") {
            auto v = value();
            if (!v) return std::nullopt;
            if (v->empty()) {
                error = arg + " needs a non-empty value";
                return std::nullopt;
            }
            (arg == "--socket" ? o.socket_path : arg == "--criu" ? o.criu : arg == "--work-dir" ? o.work_dir : o.name) = *v;
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
    if (o.socket_path.empty() || o.socket_path[0] != '/' || o.work_dir[0] != '/') {
        error = "--socket and --work-dir take absolute paths";
        return std::nullopt;
    }
    return o;
}

}  // namespace rfork::agent
