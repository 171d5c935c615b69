// Fills a buffer with random bytes, forks to the endpoint, and reports from
// both sides who it runs as: its uid, gid, groups and capability sets, and
// those of pid 1 of its pid namespace (in the child: the namespace's init,
// which restored it), with a checksum of the buffer.
//
//   identity_probe HOST:PORT MIB
#include "probe_util.hpp"
#include "program_main.hpp"

#include <rfork/rfork.hpp>

#include <asio.hpp>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

namespace {

// "uid=U gid=G groups=A,B prm=.. eff=.. amb=.." from /proc/PID/status.
std::string identity_of(const std::string& pid) {
    std::ifstream in("/proc/" + pid + "/status");
    std::string out, line;
    auto first = [](const std::string& rest) { return rest.substr(0, rest.find('\t')); };
    while (std::getline(in, line)) {
        auto value = line.substr(line.find(':') + 1);
        while (!value.empty() && (value.front() == '\t' || value.front() == ' ')) value.erase(0, 1);
        if (line.starts_with("Uid:")) out += " uid=" + first(value);
        if (line.starts_with("Gid:")) out += " gid=" + first(value);
        if (line.starts_with("Groups:")) {
            while (!value.empty() && value.back() == ' ') value.pop_back();
            for (auto& c : value) c = c == ' ' ? ',' : c;
            out += " groups=" + (value.empty() ? std::string("none") : value);
        }
        if (line.starts_with("CapPrm:")) out += " prm=" + value;
        if (line.starts_with("CapEff:")) out += " eff=" + value;
        if (line.starts_with("CapAmb:")) out += " amb=" + value;
    }
    return out;
}

// The same keys, prefixed: "init_uid=...".
std::string prefixed(const std::string& facts, const std::string& prefix) {
    std::string out;
    for (std::size_t at = 0; at < facts.size();) {
        auto space = facts.find(' ', at);
        if (space != at) out += " " + prefix + facts.substr(at, space - at);
        if (space == std::string::npos) break;
        at = space + 1;
    }
    return out;
}

}  // namespace

asio::awaitable<int> probe_main(asio::io_context& ctx, std::string endpoint, std::size_t mib) {
    std::vector<std::uint64_t> buffer(mib * (1u << 20) / 8);
    std::mt19937_64 random(std::random_device{}());
    for (auto& word : buffer) word = random();
    rfork::fork_result r = co_await rfork::fork_remote(ctx, endpoint);
    std::printf("%s id=%s sum=%016" PRIx64 "%s%s\n", r.is_child() ? "child" : "parent", r.child().id.c_str(),
                probe::checksum(buffer), identity_of("self").c_str(), prefixed(identity_of("1"), "init_").c_str());
    std::fflush(stdout);
    co_return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: identity_probe HOST:PORT MIB\n");
        return 2;
    }
    return probe::run_main("identity_probe",
                           [&](asio::io_context& ctx) { return probe_main(ctx, argv[1], std::stoul(argv[2])); });
}
