// libFuzzer target: the receiver's image gate, on image directories bundled
// into one input (image_bundle.hpp), starting from real CRIU images
// (image_corpus, make_image_seeds). Every input must be decoded or refused
// without a crash, and an image the gate accepts must name one identity.
#include "receive/image_gate.hpp"
#include "../image_bundle.hpp"

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>

using namespace rfork::agent;

namespace {

// Every uid has an account here, so that mutated uids reach every rule.
std::optional<host_account> any_account(std::uint32_t uid) { return host_account{uid, {uid, uid + 1}}; }

// A thread's bounding set as CRIU restores it: two words, a missing one zero.
std::uint64_t bounding_of(const thread_creds& t) {
    auto& w = t.cap_bnd;
    return (w.size() > 0 ? w[0] : 0) | (w.size() > 1 ? std::uint64_t(w[1]) << 32 : 0);
}

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
    // Whatever uid the image names is allowed, on a host whose bounding set
    // is none or the image's own: the gate's other rules are what is fuzzed.
    std::vector<std::uint32_t> uids;
    std::uint64_t own = 0;
    if (!read->threads.empty()) {
        uids.push_back(read->threads.front().uid);
        own = bounding_of(read->threads.front());
    }
    for (bool allow_root : {false, true})
        for (std::uint64_t bounding : {std::uint64_t(0), own}) {
            auto verdict = judge_image(*read, image_policy{allow_root, uids, bounding}, any_account);
            if (auto* who = std::get_if<image_identity>(&verdict)) {
                // Accepted: every thread runs as that one uid, root only if
                // allowed, and a user's keeps all of the host's bounding set.
                if (who->uid == 0 && !allow_root) __builtin_trap();
                for (auto& t : read->threads) {
                    if (t.uid != who->uid || t.euid != who->uid || t.suid != who->uid || t.fsuid != who->uid)
                        __builtin_trap();
                    if (who->uid != 0 && (bounding & ~bounding_of(t)) != 0) __builtin_trap();
                }
            }
        }
    return 0;
}
