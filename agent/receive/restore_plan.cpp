#include "receive/restore_plan.hpp"

#include "criu/criu.hpp"

#include <charconv>
#include <set>

namespace rfork::agent {

std::vector<stdio_end> plan_stdio(const protocol::stdio_keys& stdio) {
    std::vector<stdio_end> ends;
    std::set<std::string> made;
    for (int fd = 0; fd < 3; ++fd) {
        const auto& key = stdio[static_cast<std::size_t>(fd)];
        if (key.empty() || !made.insert(key).second) continue;
        stdio_end end{fd, key, key.starts_with("tty["), false, stdio[0] == key, std::nullopt};
        // A pipe's ends differ: stdin's read end and an output's write end go to the child.
        end.child_reads = fd == 0 && !end.terminal;
        if (stdio[1] == key)
            end.output = protocol::output_stream::stdout_stream;
        else if (stdio[2] == key)
            end.output = protocol::output_stream::stderr_stream;
        ends.push_back(std::move(end));
    }
    return ends;
}

std::vector<std::string> ns_init_command(const std::string& criu,
                                         const std::vector<std::pair<int, std::string>>& inherit, bool lazy,
                                         const std::optional<run_as>& as, std::optional<int> plan_fd) {
    // /proc/self/exe: this very agent's binary, even once a package upgrade
    // has put another at its path (the init execs before it changes).
    std::vector<std::string> argv{"/proc/self/exe", "ns-init", std::to_string(status_fd_in_init),
                                  as ? to_argument(*as) : "root", plan_fd ? std::to_string(*plan_fd) : "-", "--"};
    for (auto& arg : restore_command(criu, inherit, lazy, as.has_value())) argv.push_back(std::move(arg));
    return argv;
}

init_status parse_init_status(std::string_view line) {
    constexpr std::pair<std::string_view, init_status::kind> words[] = {
        {"restored ", init_status::kind::restored},         {"exited ", init_status::kind::exited},
        {"failed ", init_status::kind::failed},             {"criu-failed ", init_status::kind::criu_failed},
        {"files-failed ", init_status::kind::files_failed},
    };
    for (auto [word, kind] : words) {
        if (!line.starts_with(word)) continue;
        init_status status{kind, std::string(line.substr(word.size())), 0};
        // A number that does not parse reads as 0, as atoi would.
        std::from_chars(status.text.data(), status.text.data() + status.text.size(), status.number);
        return status;
    }
    return {};
}

std::pair<std::error_code, std::string> restore_failure(const init_status& status, const std::string& criu_said) {
    using kind = init_status::kind;
    if (status.what == kind::files_failed)
        return {errc::file_unavailable, "cannot give the child the files it uses: " + status.text};
    std::string why = status.what == kind::criu_failed ? criu_said
                      : status.what == kind::failed    ? status.text
                                                       : "its namespace init ended without a word";
    return {errc::restore_failed, "CRIU could not restore the process: " + why};
}

}  // namespace rfork::agent
