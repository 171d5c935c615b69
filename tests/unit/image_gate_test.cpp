// The receiver's image gate, on real CRIU images (tests/fuzz/image_corpus,
// written by tests/fuzz/make_image_seeds) and on images crafted from them
// with protobuf-c's own pack functions: the attacks of issue 9 must fail.
#include "receive/image_gate.hpp"
#include "../fuzz/image_bundle.hpp"
#include "wire_writer.hpp"

#include <core.pb-c.h>
#include <creds.pb-c.h>
#include <ghost-file.pb-c.h>

#include <doctest/doctest.h>

#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

using namespace rfork::agent;
using rfork::test::image_bundle;
using namespace rfork::test;

namespace {

constexpr std::uint32_t img_common_magic = 0x54564319, core_magic = 0x55053847, ghost_file_magic = 0x52583605;
constexpr std::uint32_t user = 1000, users_group = 1000, video = 44;
const image_policy root_allowed{true, {}};
image_policy allowing(std::vector<std::uint32_t> uids) { return {false, std::move(uids)}; }
// Uid 1000 allowed, on a host whose bounding set is `bounding`.
image_policy bounded(std::uint64_t bounding) { return {false, {user}, bounding}; }
constexpr std::uint64_t cap_setgid = 1ull << 6, cap_setuid = 1ull << 7, cap_checkpoint_restore = 1ull << 40;
const char* const kinds[] = {"single", "threads", "pipe", "pty", "tcp", "ghost"};

image_bundle seed(const std::string& kind) {
    std::ifstream in(std::string(RFORK_IMAGE_SEEDS) + "/" + kind + ".bin", std::ios::binary);
    bytes data((std::istreambuf_iterator<char>(in)), {});
    auto files = rfork::test::unbundle(data);
    REQUIRE(files);
    REQUIRE_FALSE(files->empty());
    return *files;
}

// A seed image written to a directory of its own, removed with the object.
struct temp_image {
    std::filesystem::path path;
    image_bundle files;
    explicit temp_image(const std::string& kind) : files(seed(kind)) {
        std::string pattern = (std::filesystem::temp_directory_path() / "rfork-gate-test-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()));
        path = pattern;
        for (auto& [name, _] : files) restore(name);
    }
    ~temp_image() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    temp_image(const temp_image&) = delete;
    temp_image& operator=(const temp_image&) = delete;
    // The file as the seed has it (empty if the seed has none).
    void restore(const std::string& name) {
        std::ofstream out(path / name, std::ios::binary | std::ios::trunc);
        auto found = files.find(name);
        if (found != files.end())
            out.write(reinterpret_cast<const char*>(found->second.data()),
                      static_cast<std::streamsize>(found->second.size()));
    }
    void resize(const std::string& name, std::uint64_t size) {
        if (!std::filesystem::exists(path / name)) restore(name);
        std::filesystem::resize_file(path / name, size);
    }
};

// Bytes this process has read so far (rchar of /proc/self/io).
std::uint64_t bytes_read() {
    std::ifstream in("/proc/self/io");
    for (std::string key; in >> key;) {
        std::uint64_t value = 0;
        in >> value;
        if (key == "rchar:") return value;
    }
    FAIL("no rchar in /proc/self/io");
    return 0;
}

gate_result<image_facts> facts_of(const image_bundle& image) {
    std::vector<std::string> names;
    for (auto& [name, _] : image) names.push_back(name);
    return read_image_facts(names, [&](const std::string& name, std::size_t max) -> std::optional<bytes> {
        auto& data = image.at(name);
        return bytes(data.begin(), data.begin() + static_cast<long>(std::min(max, data.size())));
    });
}

// On this imaginary host, uid 1000 is in groups 1000 (its primary) and 44.
std::optional<host_account> accounts(std::uint32_t uid) {
    if (uid == user) return host_account{users_group, {users_group, video}};
    if (uid == 0) return host_account{0, {0}};
    return std::nullopt;
}

gate_result<image_identity> judge(const image_bundle& image, image_policy policy = allowing({user})) {
    auto facts = facts_of(image);
    if (auto* refused = std::get_if<image_refusal>(&facts)) return *refused;
    return judge_image(std::get<image_facts>(facts), policy, accounts);
}

// The refusal's message, or "" if the image passed.
std::string refusal(const gate_result<image_identity>& verdict) {
    auto* refused = std::get_if<image_refusal>(&verdict);
    return refused ? refused->message : "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A length-delimited field: key, length, payload.
void embedded(bytes& out, std::uint32_t number, const bytes& payload) {
    put_varint(out, number << 3 | 2);
    put_varint(out, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
}

template <typename Message>
bytes packed(const Message& m) {
    bytes out(protobuf_c_message_get_packed_size(&m.base));
    protobuf_c_message_pack(&m.base, out.data());
    return out;
}

bytes core_image_of(const bytes& entry) {
    bytes image;
    put_u32le(image, img_common_magic);
    put_u32le(image, core_magic);
    put_u32le(image, static_cast<std::uint32_t>(entry.size()));
    image.insert(image.end(), entry.begin(), entry.end());
    return image;
}

bytes core_entry_of(const bytes& image) { return bytes(image.begin() + 12, image.end()); }

// Unpacks a core image, lets `edit` change it, packs it again.
bytes edited_core(const bytes& image, const std::function<void(CoreEntry&)>& edit) {
    auto entry = core_entry_of(image);
    auto* core = core_entry__unpack(nullptr, entry.size(), entry.data());
    REQUIRE(core);
    edit(*core);
    auto out = core_image_of(packed(*core));
    core_entry__free_unpacked(core, nullptr);
    return out;
}

void each_core(image_bundle& image, const std::function<void(CoreEntry&)>& edit) {
    for (auto& [name, data] : image)
        if (name.starts_with("core-")) data = edited_core(data, edit);
}

std::string first_core(const image_bundle& image) {
    for (auto& [name, _] : image)
        if (name.starts_with("core-")) return name;
    FAIL("no core image");
    return "";
}

// Replaces a repeated field of an unpacked message: protobuf-c frees it with free().
void set_words(std::uint32_t*& words, std::size_t& n, const std::vector<std::uint32_t>& values) {
    std::free(words);
    words = static_cast<std::uint32_t*>(std::malloc(std::max<std::size_t>(1, values.size()) * sizeof(std::uint32_t)));
    REQUIRE(words);
    std::copy(values.begin(), values.end(), words);
    n = values.size();
}

// What a process of uid 1000 has: its ids, no groups, no capabilities.
void as_user(CoreEntry& core) {
    auto& c = *core.thread_core->creds;
    c.uid = c.euid = c.suid = c.fsuid = user;
    c.gid = c.egid = c.sgid = c.fsgid = users_group;
    c.n_groups = c.n_cap_inh = c.n_cap_prm = c.n_cap_eff = c.n_cap_amb = 0;
    c.secbits = 0;
}

bytes edited_ghost(const bytes& image, const std::function<void(GhostFileEntry&)>& edit);

// The bounding set of the first thread of `image`, read by the gate.
std::uint64_t bounding_of(const image_bundle& image) {
    auto facts = facts_of(image);
    REQUIRE(std::holds_alternative<image_facts>(facts));
    auto& words = std::get<image_facts>(facts).threads.front().cap_bnd;
    REQUIRE(words.size() == 2);
    return words[0] | std::uint64_t(words[1]) << 32;
}

void set_bounding(CoreEntry& core, std::uint64_t bits) {
    auto& c = *core.thread_core->creds;
    set_words(c.cap_bnd, c.n_cap_bnd, {static_cast<std::uint32_t>(bits), static_cast<std::uint32_t>(bits >> 32)});
}

// A real image, as if uid 1000 had made it.
image_bundle user_seed(const std::string& kind) {
    auto image = seed(kind);
    each_core(image, as_user);
    for (auto& [name, data] : image)
        if (name.starts_with("ghost-file-")) data = edited_ghost(data, [](GhostFileEntry& g) {
            g.uid = user;
            g.gid = users_group;
        });
    return image;
}

// The creds of a core of uid 1000, with other ids.
bytes creds_as(const bytes& core_image, std::uint32_t uid) {
    auto entry = core_entry_of(core_image);
    auto* core = core_entry__unpack(nullptr, entry.size(), entry.data());
    REQUIRE(core);
    auto& c = *core->thread_core->creds;
    c.uid = c.euid = c.suid = c.fsuid = uid;
    c.gid = c.egid = c.sgid = c.fsgid = uid;
    auto out = packed(c);
    core_entry__free_unpacked(core, nullptr);
    return out;
}

// Edits the first entry of a ghost file image, keeping the contents after it.
bytes edited_ghost(const bytes& image, const std::function<void(GhostFileEntry&)>& edit) {
    std::uint32_t size = image[8] | image[9] << 8 | image[10] << 16 | std::uint32_t(image[11]) << 24;
    auto* ghost = ghost_file_entry__unpack(nullptr, size, image.data() + 12);
    REQUIRE(ghost);
    edit(*ghost);
    auto entry = packed(*ghost);
    ghost_file_entry__free_unpacked(ghost, nullptr);
    bytes out;
    put_u32le(out, img_common_magic);
    put_u32le(out, ghost_file_magic);
    put_u32le(out, static_cast<std::uint32_t>(entry.size()));
    out.insert(out.end(), entry.begin(), entry.end());
    out.insert(out.end(), image.begin() + 12 + size, image.end());
    return out;
}

}  // namespace

TEST_SUITE("unit.image_gate") {
    TEST_CASE("real images of every kind pass as root when root is allowed") {
        for (std::string kind : kinds) {
            CAPTURE(kind);
            auto verdict = judge(seed(kind), root_allowed);
            REQUIRE_MESSAGE(std::holds_alternative<image_identity>(verdict), refusal(verdict));
            CHECK(std::get<image_identity>(verdict).uid == 0);
        }
    }

    TEST_CASE("real images of a user pass and run as that user with the ids the image gives it") {
        for (std::string kind : kinds) {
            CAPTURE(kind);
            auto verdict = judge(user_seed(kind));
            REQUIRE_MESSAGE(std::holds_alternative<image_identity>(verdict), refusal(verdict));
            auto& who = std::get<image_identity>(verdict);
            CHECK(who.uid == user);
            // CRIU, running as the user, cannot set any other ids: exactly the image's.
            CHECK(who.gid == users_group);
            CHECK(who.groups.empty());
        }
    }

    TEST_CASE("every thread of a real multi-threaded image is read") {
        auto facts = facts_of(seed("threads"));
        REQUIRE(std::holds_alternative<image_facts>(facts));
        CHECK(std::get<image_facts>(facts).threads.size() == 3);
        auto ghosts = facts_of(seed("ghost"));
        REQUIRE(std::holds_alternative<image_facts>(ghosts));
        CHECK(std::get<image_facts>(ghosts).ghosts.size() == 1);
    }

    TEST_CASE("creds of uid 1000 followed by creds of uid 0 are refused") {
        auto image = user_seed("single");
        auto name = first_core(image);
        auto& core_image = image[name];
        // thread_core as packed, then a second creds field: the attack of issue 9.
        auto entry = core_entry_of(core_image);
        auto* core = core_entry__unpack(nullptr, entry.size(), entry.data());
        REQUIRE(core);
        auto thread_core = packed(*core->thread_core);
        embedded(thread_core, 10, creds_as(core_image, 0));
        auto* own = std::exchange(core->thread_core, nullptr);  // packed without it, then appended by hand
        auto crafted = packed(*core);
        embedded(crafted, 5, thread_core);
        core->thread_core = own;
        core_entry__free_unpacked(core, nullptr);

        // protobuf-c, as CRIU uses it, would restore this thread as root.
        auto* merged = core_entry__unpack(nullptr, crafted.size(), crafted.data());
        REQUIRE(merged);
        CHECK(merged->thread_core->creds->uid == 0);
        core_entry__free_unpacked(merged, nullptr);

        core_image = core_image_of(crafted);
        auto why = refusal(judge(image, image_policy{}));
        CHECK(has(why, name));
        CHECK(has(why, "creds appears more than once"));
        CHECK(has(refusal(judge(image, root_allowed)), "creds appears more than once"));
    }

    TEST_CASE("a second thread_core is refused") {
        auto image = user_seed("single");
        auto name = first_core(image);
        auto entry = core_entry_of(image[name]);
        auto* core = core_entry__unpack(nullptr, entry.size(), entry.data());
        REQUIRE(core);
        auto& c = *core->thread_core->creds;
        c.uid = c.euid = c.suid = c.fsuid = 0;
        auto root_thread_core = packed(*core->thread_core);
        core_entry__free_unpacked(core, nullptr);
        embedded(entry, 5, root_thread_core);
        image[name] = core_image_of(entry);
        CHECK(has(refusal(judge(image)), "thread_core appears more than once"));
    }

    TEST_CASE("a core image without credentials or with a second entry is refused") {
        auto image = user_seed("single");
        auto name = first_core(image);
        auto original = image[name];
        image[name] = edited_core(original, [](CoreEntry& core) { core.thread_core->creds = nullptr; });
        CHECK(has(refusal(judge(image, root_allowed)), "holds no credentials"));
        image[name] = edited_core(original, [](CoreEntry& core) { core.thread_core = nullptr; });
        CHECK(has(refusal(judge(image, root_allowed)), "holds no credentials"));
        auto twice = original;
        put_u32le(twice, 0);
        image[name] = twice;
        CHECK(has(refusal(judge(image)), "more than the one entry"));
    }

    TEST_CASE("threads of different users are refused") {
        auto image = user_seed("threads");
        auto& [name, data] = *std::prev(image.upper_bound("core-:"));  // the last core
        data = edited_core(data, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            c.uid = c.euid = c.suid = c.fsuid = user + 1;
        });
        auto why = refusal(judge(image));
        CHECK(has(why, name));
        CHECK(has(why, "runs as uid 1001"));
    }

    TEST_CASE("a thread whose ids differ from one another is refused") {
        auto image = user_seed("single");
        each_core(image, [](CoreEntry& core) { core.thread_core->creds->fsuid = 0; });
        CHECK(has(refusal(judge(image)), "several user ids"));
        image = user_seed("single");
        each_core(image, [](CoreEntry& core) { core.thread_core->creds->egid = 0; });
        CHECK(has(refusal(judge(image)), "several group ids"));
    }

    TEST_CASE("uid 0 is refused without allow-root") {
        auto why = refusal(judge(seed("single")));
        CHECK(has(why, "only when started with --allow-root"));
    }

    TEST_CASE("a uid outside allow-uid or without an account here is refused and none is allowed by default") {
        CHECK(has(refusal(judge(user_seed("single"), allowing({2000}))), "not among this agent's --allow-uid"));
        CHECK(std::holds_alternative<image_identity>(judge(user_seed("single"), allowing({2000, user}))));
        auto image = user_seed("single");
        each_core(image, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            c.uid = c.euid = c.suid = c.fsuid = 4242;
        });
        CHECK(has(refusal(judge(image, allowing({4242}))), "uid 4242 has no account on the receiving host"));
    }

    TEST_CASE("without allow-uid no uid is allowed and with it only those named") {
        CHECK_FALSE(uid_allowed({}, user));
        CHECK_FALSE(uid_allowed(allowing({2000}), user));
        CHECK(has(refusal(judge(user_seed("single"), allowing({}))), "start it with --allow-uid 1000"));
        CHECK(uid_allowed(allowing({2000, user}), user));
    }

    TEST_CASE("gid 0 and groups the user is not in are refused") {
        auto image = user_seed("single");
        each_core(image, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            c.gid = c.egid = c.sgid = c.fsgid = 0;
        });
        CHECK(has(refusal(judge(image)), "runs with group 0, which is not one of uid 1000's groups"));

        image = user_seed("single");
        each_core(image, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            set_words(c.groups, c.n_groups, {video, 42});
        });
        auto why = refusal(judge(image));
        CHECK(has(why, "runs with group 42"));

        // A group this host gives the user passes.
        image = user_seed("single");
        each_core(image, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            set_words(c.groups, c.n_groups, {video});
        });
        auto passed = judge(image);
        REQUIRE(std::holds_alternative<image_identity>(passed));
        CHECK(std::get<image_identity>(passed).groups == std::vector<std::uint32_t>{video});
    }

    TEST_CASE("capabilities are refused in every set") {
        const std::vector<std::uint32_t> cap_sys_admin{1u << 21, 0};
        using set = std::function<void(CredsEntry&)>;
        std::map<std::string, set> sets{
            {"inheritable", [&](CredsEntry& c) { set_words(c.cap_inh, c.n_cap_inh, cap_sys_admin); }},
            {"permitted", [&](CredsEntry& c) { set_words(c.cap_prm, c.n_cap_prm, cap_sys_admin); }},
            {"effective", [&](CredsEntry& c) { set_words(c.cap_eff, c.n_cap_eff, cap_sys_admin); }},
            {"ambient", [&](CredsEntry& c) { set_words(c.cap_amb, c.n_cap_amb, cap_sys_admin); }},
        };
        for (auto& [name, give] : sets) {
            CAPTURE(name);
            auto image = user_seed("single");
            each_core(image, [&](CoreEntry& core) { give(*core.thread_core->creds); });
            CHECK(has(refusal(judge(image)), "has " + name + " capabilities"));
        }
        // Words that are all zero are no capabilities.
        auto image = user_seed("single");
        each_core(image, [](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            set_words(c.cap_eff, c.n_cap_eff, {0, 0});
        });
        CHECK(std::holds_alternative<image_identity>(judge(image)));
    }

    TEST_CASE("securebits are refused") {
        auto image = user_seed("single");
        each_core(image, [](CoreEntry& core) { core.thread_core->creds->secbits = 0x2f; });
        CHECK(has(refusal(judge(image)), "sets securebits 0x2f"));
    }

    TEST_CASE("an image whose bounding set lacks CAP_SETUID that the host holds is refused") {
        auto own = bounding_of(seed("single"));
        REQUIRE((own & cap_setuid) != 0);
        auto image = user_seed("single");
        each_core(image, [&](CoreEntry& core) { set_bounding(core, own & ~cap_setuid); });
        auto why = refusal(judge(image, bounded(own)));
        CHECK(has(why, first_core(image) + " drops CAP_SETUID from the bounding set, which a user's process cannot "
                                           "do: rfork does not restore it"));
        // Each capability missing is named, also those of the second word.
        each_core(image, [&](CoreEntry& core) { set_bounding(core, own & ~(cap_setuid | cap_setgid)); });
        CHECK(has(refusal(judge(image, bounded(own))), "drops CAP_SETGID, CAP_SETUID from"));
        each_core(image, [&](CoreEntry& core) { set_bounding(core, own & ~cap_checkpoint_restore); });
        CHECK(has(refusal(judge(image, bounded(own | cap_checkpoint_restore))), "drops CAP_CHECKPOINT_RESTORE from"));
        // A word CRIU does not find is all zero to it.
        each_core(image, [&](CoreEntry& core) {
            auto& c = *core.thread_core->creds;
            set_words(c.cap_bnd, c.n_cap_bnd, {static_cast<std::uint32_t>(own)});
        });
        why = refusal(judge(image, bounded(own | cap_checkpoint_restore)));
        CHECK(has(why, "drops CAP_MAC_OVERRIDE, "));
        CHECK(has(why, ", CAP_CHECKPOINT_RESTORE from"));
        // Root's image is trusted by design, its bounding set too.
        auto root = seed("single");
        each_core(root, [&](CoreEntry& core) { set_bounding(core, own & ~cap_setuid); });
        CHECK(std::holds_alternative<image_identity>(judge(root, {true, {}, own})));
    }

    TEST_CASE("real images of a user pass on a host with the bounding set they hold") {
        for (std::string kind : kinds) {
            CAPTURE(kind);
            auto own = bounding_of(seed(kind));
            CHECK(own != 0);
            auto verdict = judge(user_seed(kind), bounded(own));
            CHECK_MESSAGE(std::holds_alternative<image_identity>(verdict), refusal(verdict));
        }
    }

    TEST_CASE("an image whose bounding set holds more than the host's passes") {
        auto own = bounding_of(seed("threads"));
        auto host = own & ~(cap_setuid | cap_checkpoint_restore);
        auto verdict = judge(user_seed("threads"), bounded(host));
        CHECK_MESSAGE(std::holds_alternative<image_identity>(verdict), refusal(verdict));
        // Capabilities the host's kernel does not know are no requirement either.
        auto image = user_seed("threads");
        each_core(image, [&](CoreEntry& core) { set_bounding(core, host | 1ull << 63); });
        CHECK(std::holds_alternative<image_identity>(judge(image, bounded(host))));
    }

    TEST_CASE("own_bounding_set is CapBnd of proc self status") {
        std::ifstream in("/proc/self/status");
        std::string line;
        std::optional<std::uint64_t> expected;
        while (std::getline(in, line))
            if (line.starts_with("CapBnd:")) expected = std::stoull(line.substr(7), nullptr, 16);
        REQUIRE(expected);
        CHECK(own_bounding_set() == expected);
        // And the kernel's own answer, capability by capability.
        for (int cap = 0; cap < 64; ++cap) {
            CAPTURE(cap);
            int held = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
            if (held < 0) break;  // past the kernel's last capability
            CHECK(bool(*expected >> cap & 1) == bool(held));
        }
        CHECK(bounding_set_in("Name:\tx\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n") == 0x1ffffffffffull);
        CHECK(bounding_set_in("CapBnd:\t0000000000000000") == 0u);
        CHECK_FALSE(bounding_set_in("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        CHECK_FALSE(bounding_set_in("CapBnd:\t\n"));
        CHECK_FALSE(bounding_set_in("CapBnd:\t00000001fffffffffff\n"));
        CHECK_FALSE(bounding_set_in("CapBnd:\t-1\n"));
        CHECK_FALSE(bounding_set_in("XCapBnd:\t1\n"));
    }

    TEST_CASE("namespace images and files CRIU does not write for rfork are refused") {
        for (auto name : {"netns-12.img", "userns-12.img", "mountpoints-12.img", "ipcns-var-12.img", "utsns-12.img",
                          "cgroup.img"}) {
            CAPTURE(name);
            auto image = user_seed("single");
            image[name] = {};
            CHECK(has(refusal(judge(image)), std::string(name) + ": rfork does not restore namespaces"));
        }
        for (auto name : {"creds-1.img", "reg-files.img", "core-1x.img", "dump.log"}) {
            CAPTURE(name);
            auto image = user_seed("single");
            image[name] = {};
            auto why = refusal(judge(image));
            if (std::string(name) == "core-1x.img") {
                CHECK(has(why, "core-1x.img is not a valid core image"));
            } else {
                CHECK(has(why, std::string(name) + ", which is not among the files CRIU writes"));
            }
        }
    }

    TEST_CASE("ghost files that are device nodes set-id or not the user's are refused") {
        auto base = user_seed("ghost");
        std::string name = "ghost-file-1.img";
        REQUIRE(base.count(name));
        auto with = [&](const std::function<void(GhostFileEntry&)>& edit) {
            auto image = base;
            image[name] = edited_ghost(image[name], [&](GhostFileEntry& g) {
                g.uid = user;
                g.gid = users_group;
                edit(g);
            });
            return refusal(judge(image));
        };
        CHECK(with([](GhostFileEntry&) {}) == "");
        CHECK(has(with([](GhostFileEntry& g) {
                  g.mode = S_IFCHR | 0666;
                  g.has_rdev = true;
                  g.rdev = static_cast<std::uint32_t>(makedev(1, 3));
              }),
              "ghost-file-1.img would create a device node"));
        CHECK(has(with([](GhostFileEntry& g) { g.mode = S_IFBLK | 0600; }), "device node"));
        CHECK(has(with([](GhostFileEntry& g) { g.mode = S_IFREG | S_ISUID | 0755; }), "set-user-id"));
        CHECK(has(with([](GhostFileEntry& g) { g.mode = S_IFREG | S_ISGID | 0755; }), "set-group-id"));
        CHECK(has(with([](GhostFileEntry& g) { g.uid = 0; }), "owned by uid 0"));
        CHECK(has(with([](GhostFileEntry& g) { g.gid = 0; }), "runs with group 0"));
    }

    TEST_CASE("truncated or garbage core images are refused") {
        auto image = user_seed("threads");
        auto name = first_core(image);
        auto original = image[name];
        for (std::size_t size = 0; size < original.size(); ++size) {
            CAPTURE(size);
            image[name] = bytes(original.begin(), original.begin() + static_cast<long>(size));
            CHECK(has(refusal(judge(image)), name + " is not a valid core image"));
        }
        bytes garbage = core_image_of(bytes(200, 0xff));
        image[name] = garbage;
        CHECK(has(refusal(judge(image)), "is not a valid core image"));
        image[name] = {};
        CHECK(has(refusal(judge(image)), "is not a valid core image"));
    }

    TEST_CASE("an image directory is read from its files with this host's accounts") {
        auto dir = std::filesystem::temp_directory_path() / ("rfork-gate-test-" + std::to_string(::getpid()));
        std::filesystem::create_directory(dir);
        for (auto& [name, data] : seed("threads")) {
            std::ofstream out(dir / name, std::ios::binary);
            out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
        }
        auto verdict = check_image_dir(dir.string(), root_allowed);
        auto refused = check_image_dir(dir.string(), image_policy{});
        std::filesystem::remove_all(dir);
        REQUIRE_MESSAGE(std::holds_alternative<image_identity>(verdict), refusal(verdict));
        CHECK(std::get<image_identity>(verdict).uid == 0);
        CHECK(has(refusal(refused), "--allow-root"));
        CHECK(has(refusal(check_image_dir(dir.string(), root_allowed)), "cannot list the image"));
    }

    TEST_CASE("only memory pages are uncapped and every other image file has a cap") {
        CHECK_FALSE(max_image_file_size("pages-1.img"));
        CHECK_FALSE(max_image_file_size("pages-12.img"));
        CHECK(max_image_file_size("core-1.img") == 16u << 20);
        for (auto name : {"pagemap-1.img", "mm-1.img", "files.img", "pstree.img", "ghost-file-1.img",
                          "pipes-data.img", "tcp-stream-1.img", "inventory.img", "stats-dump", "pages.img.x"}) {
            CAPTURE(name);
            CHECK(max_image_file_size(name) == 64u << 20);
        }
    }

    TEST_CASE("image files beyond their cap are refused before any byte of them is read") {
        temp_image dir("threads");
        auto core = first_core(seed("threads"));
        // Sparse: the size is claimed, not written.
        for (auto [name, size] : {std::pair<std::string, std::uint64_t>{core, (16u << 20) + 1},
                                  {"mm-1.img", (64u << 20) + 1},
                                  {"files.img", std::uint64_t(1) << 40}}) {
            CAPTURE(name);
            dir.resize(name, size);
            auto before = bytes_read();
            auto verdict = check_image_dir(dir.path.string(), root_allowed);
            CHECK(bytes_read() - before < (1u << 20));
            CHECK(has(refusal(verdict), name + " of the image is " + std::to_string(size) + " bytes"));
            dir.restore(name);
            CHECK(refusal(check_image_dir(dir.path.string(), root_allowed)).empty());
        }
    }

    TEST_CASE("a file at its cap passes and memory pages of any size are never read") {
        temp_image dir("threads");
        dir.resize("pages-1.img", std::uint64_t(1) << 40);
        dir.resize("mm-1.img", 64u << 20);
        auto before = bytes_read();
        auto verdict = check_image_dir(dir.path.string(), root_allowed);
        CHECK(bytes_read() - before < (1u << 20));
        CHECK(refusal(verdict).empty());
    }

    TEST_CASE("an image file that is not a regular file is refused") {
        temp_image dir("threads");
        std::filesystem::remove(dir.path / "files.img");
        std::filesystem::create_symlink("/etc/passwd", dir.path / "files.img");
        CHECK(has(refusal(check_image_dir(dir.path.string(), root_allowed)), "files.img of the image is not a regular file"));
        std::filesystem::remove(dir.path / "files.img");
        std::filesystem::create_directory(dir.path / "mm-1.img");
        CHECK(has(refusal(check_image_dir(dir.path.string(), root_allowed)), "mm-1.img of the image is not a regular file"));
    }

    TEST_CASE("an image without any core image is refused") {
        image_bundle image{{"pstree.img", {}}};
        CHECK(has(refusal(judge(image)), "holds no process"));
    }
}
