#include "local/keygen_command.hpp"

#include "peer/peer_connection.hpp"

#include <CLI/CLI.hpp>

#include <fmt/core.h>

namespace rfork::agent {

namespace {

constexpr const char* keygen_usage =
    "usage: rfork-agent keygen PATH | keygen --ca DIR | keygen --host NAME [--host NAME ...] --ca DIR OUT";

}  // namespace

CLI::App* add_keygen_command(CLI::App& app, keygen_command& into) {
    auto* command = app.add_subcommand("keygen", "credentials for the agents: a shared secret (keygen PATH),\n"
                                                 "a certificate authority (keygen --ca DIR), or a host's\n"
                                                 "certificate and key (keygen --host NAME ... --ca DIR OUT)");
    command->add_option("PATH", into.out, "the new secret (for --secret-file), or with --host the\n"
                                          "directory of the host's certificate and key");
    command->add_option("--ca", into.ca, "the certificate authority's directory: made, or with\n"
                                         "--host the one that signs")
        ->type_name("DIR");
    command->add_option("--host", into.hosts, "a name the host's certificate holds (a host name or\n"
                                              "address); one --host for each")
        ->type_name("NAME")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    return command;
}

keygen_form form_of(const keygen_command& command) {
    bool out = !command.out.empty(), ca = !command.ca.empty(), hosts = !command.hosts.empty();
    if (out && !ca && !hosts) return keygen_form::secret;
    if (ca && !out && !hosts) return keygen_form::authority;
    if (ca && out && hosts) return keygen_form::host;
    return keygen_form::none;
}

int run_keygen(const keygen_command& command) {
    std::string error;
    switch (form_of(command)) {
    case keygen_form::secret: error = write_new_secret(command.out); break;
    case keygen_form::authority: error = make_ca(command.ca); break;
    case keygen_form::host: error = make_host_certificate(command.hosts, command.ca, command.out); break;
    case keygen_form::none: fmt::print(stderr, "{}\n", keygen_usage); return 2;
    }
    if (!error.empty()) fmt::print(stderr, "rfork-agent keygen: {}\n", error);
    return error.empty() ? 0 : 1;
}

}  // namespace rfork::agent
