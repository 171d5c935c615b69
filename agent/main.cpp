// rfork-agent: one binary on every machine, in both roles (see sender.hpp and
// receiver.hpp). This file only reads the command line and runs what it names.
#include "common/agent_command_line.hpp"
#include "common/log.hpp"
#include "doctor/doctor.hpp"
#include "local/cli.hpp"
#include "local/keygen_command.hpp"
#include "receive/ns_init.hpp"
#include "service/service.hpp"

#include <CLI/CLI.hpp>

#include <fmt/core.h>

#include <cstring>
#include <string>

using namespace rfork::agent;

namespace {

// Bad arguments: what, the command that fixes it when there is one, and where to look. Exit code 2.
int refuse(const CLI::App& command, const options_error& error) {
    auto name = command.get_parent() ? "rfork-agent " + command.get_name() : std::string("rfork-agent");
    fmt::print(stderr, "{}: {}\n", name, error.what);
    if (!error.fix.empty()) fmt::print(stderr, "  fix: {}\n", error.fix);
    fmt::print(stderr, "see {} --help\n", name);
    return 2;
}

// The subcommand given, or the app itself: the one whose words a parse error is about.
const CLI::App& given(const CLI::App& app) {
    auto subcommands = app.get_subcommands();
    return subcommands.empty() ? app : *subcommands.front();
}

}  // namespace

int main(int argc, char** argv) {
    // Internal: a restored child's namespace init, started by the agent with an argv of its own making.
    if (argc >= 2 && std::strcmp(argv[1], "ns-init") == 0) return run_ns_init(argc, argv);

    CLI::App app("Receives processes forked here by other agents, and forks local programs\n"
                 "that ask for it (rfork::fork_remote) to other agents.",
                 "rfork-agent");
    app.require_subcommand(0, 1);
    agent_command_line agent(app);
    list_command list;
    kill_command kill;
    keygen_command keygen;
    auto* list_app = add_list_command(app, list);
    auto* kill_app = add_kill_command(app, kill);
    auto* keygen_app = add_keygen_command(app, keygen);
    // Takes the agent's own options, and parses them itself, with its own --help.
    auto* doctor_app = app.add_subcommand("doctor", "checks this host, and with --peer HOST:PORT its peers");
    doctor_app->prefix_command();
    doctor_app->set_help_flag();
    for (auto* command : {list_app, kill_app, keygen_app}) command->allow_extras(false);
    app.footer("Each subcommand's options: rfork-agent SUBCOMMAND --help");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        fmt::print("{}", app.help());  // the subcommand's, when one was given
        return 0;
    } catch (const options_refused& e) {
        return refuse(app, e.error);
    } catch (const CLI::ParseError& e) {
        return refuse(given(app), {e.what(), {}});
    }
    if (!app.get_subcommands().empty() && agent.any_given())
        return refuse(app, {"the agent's options go without a subcommand, and each subcommand takes its own", {}});
    if (*doctor_app) return run_doctor(doctor_app->remaining());
    if (*list_app) return run_list(list);
    if (*kill_app) return run_kill(kill);
    if (*keygen_app) return run_keygen(keygen);

    options_error error;
    auto opts = agent.finish(error, true);
    if (!opts) return refuse(app, error);
    try {
        return run_agent(*opts);
    } catch (const std::exception& e) {
        log("fatal: {}", e.what());
        return 1;
    }
}
