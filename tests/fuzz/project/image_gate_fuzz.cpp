// libFuzzer target: the receiver's image gate, on image directories bundled
// into one input (image_bundle.hpp), starting from real CRIU images
// (image_corpus, make_image_seeds). Every input must be decoded or refused
// without a crash, and an image the gate accepts must name one identity.
#include "../../../agent/image_gate.hpp"
#include "../image_bundle.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>

using namespace rfork::agent;

namespace {

// Every uid has an account here, so that mutated uids reach every rule.
std::optional<host_account> any_account(std::uint32_t uid) { return host_account{uid, {uid, uid + 1}}; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto files = rfork::test::unbundle(std::span<const unsigned char>(data, size));
    if (!files) return 0;
    std::vector<std::string> names;
    for (auto& [name, _] : *files) names.push_back(name);
    auto facts = read_image_facts(names, [&](const std::string& name, std::size_t max) -> std::optional<std::vector<unsigned char>> {
        auto& contents = files->at(name);
        return std::vector<unsigned char>(contents.begin(), contents.begin() + static_cast<long>(std::min(max, contents.size())));
    });
    auto* read = std::get_if<image_facts>(&facts);
    if (!read) return 0;
    for (bool allow_root : {false, true}) {
        // Whatever uid the image names is allowed: the gate's other rules are what is fuzzed.
        std::vector<std::uint32_t> uids;
        if (!read->threads.empty()) uids.push_back(read->threads.front().uid);
        auto verdict = judge_image(*read, image_policy{allow_root, uids}, any_account);
        if (auto* who = std::get_if<image_identity>(&verdict)) {
            // Accepted: every thread runs as that one uid, root only if allowed.
            if (who->uid == 0 && !allow_root) __builtin_trap();
            for (auto& t : read->threads)
                if (t.uid != who->uid || t.euid != who->uid || t.suid != who->uid || t.fsuid != who->uid)
                    __builtin_trap();
        }
    }
    return 0;
}
