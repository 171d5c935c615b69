// `rfork-agent keygen`: the credentials agents prove to each other. Three
// forms: a shared secret (keygen PATH), a certificate authority (keygen --ca
// DIR), and a host's certificate signed by one (keygen --host NAME ... --ca
// DIR OUT).
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace rfork::agent {

struct keygen_command {
    std::vector<std::string> hosts;  // --host: the names a host's certificate holds
    std::string ca;                  // --ca DIR
    std::string out;                 // the secret's path, or the host's certificate's directory
};

enum class keygen_form { none, secret, authority, host };

// Declares the subcommand on `app`, writing into `into`, and returns it.
CLI::App* add_keygen_command(CLI::App& app, keygen_command& into);

// Which of the three forms the arguments make, or none.
keygen_form form_of(const keygen_command& command);

// Returns the exit code: 0 made, 1 failed (said on stderr), 2 no form of it.
int run_keygen(const keygen_command& command);

}  // namespace rfork::agent
