#include "receive/image_gate.hpp"

#include "receive/strict_protobuf.hpp"

#include <core.pb-c.h>
#include <creds.pb-c.h>
#include <ghost-file.pb-c.h>

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <charconv>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string_view>

namespace rfork::agent {

namespace {

using bytes = std::vector<unsigned char>;

// CRIU's images/magic.h.
constexpr std::uint32_t img_common_magic = 0x54564319;
constexpr std::uint32_t core_magic = 0x55053847;
constexpr std::uint32_t ghost_file_magic = 0x52583605;

// A thread's core image is 2 KiB, and 136 bytes more for each signal queued
// to it: the default RLIMIT_SIGPENDING (as many as the user's processes, some
// 100,000 on a 24 GiB host) fills 13 MiB. It is read whole.
constexpr std::size_t max_core_image = 16 << 20;
// Every other file: mm-*.img takes 96 bytes a mapping, and files.img some
// 100 a descriptor, 48 MiB for the 524,288 that systemd's hard RLIMIT_NOFILE
// allows; pagemap-*.img some 16 bytes a run of pages, 32 MiB for the most
// scattered 16 GiB of memory; one socket's queues (tcp-stream-*.img) 10 MiB
// by the kernel's default buffer limits.
constexpr std::uint64_t max_other_image = 64 << 20;
// A ghost file's entry comes before its contents, of which the gate reads nothing.
constexpr std::size_t ghost_prefix = 64 << 10;

// Inside these an unknown field could be a credential this gate cannot judge.
constexpr std::array<const ProtobufCMessageDescriptor*, 2> closed_messages{&creds_entry__descriptor,
                                                                          &ghost_file_entry__descriptor};

gate_result<image_identity> refuse(std::string message) { return image_refusal{std::move(message)}; }

std::uint32_t u32le(const bytes& b, std::size_t at) {
    return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
           std::uint32_t(b[at + 3]) << 24;
}

// The first entry of a CRIU protobuf image: magics, a 32-bit length, the
// message. `only` requires that nothing follows it.
std::optional<std::string> first_entry(const bytes& image, std::uint32_t magic, bool only,
                                       std::span<const unsigned char>& entry) {
    if (image.size() < 12 || u32le(image, 0) != img_common_magic || u32le(image, 4) != magic)
        return "it does not start as CRIU writes this kind of image";
    std::size_t size = u32le(image, 8);
    if (size > image.size() - 12) return "it is truncated";
    if (only && size != image.size() - 12) return "it holds more than the one entry CRIU reads";
    entry = std::span<const unsigned char>(image).subspan(12, size);
    return std::nullopt;
}

template <typename Message>
struct unpacked_deleter {
    void operator()(Message* m) const { protobuf_c_message_free_unpacked(&m->base, nullptr); }
};
template <typename Message>
using unpacked = std::unique_ptr<Message, unpacked_deleter<Message>>;

// The first entry of `image`, strictly checked, then unpacked by protobuf-c
// exactly as CRIU unpacks it; or why it cannot be.
template <typename Message>
std::variant<unpacked<Message>, std::string> decode_first(const bytes& image, std::uint32_t magic, bool only,
                                                          const ProtobufCMessageDescriptor& type) {
    std::span<const unsigned char> entry;
    if (auto problem = first_entry(image, magic, only, entry)) return *problem;
    if (auto problem = strict_protobuf_problem(type, entry, closed_messages)) return *problem;
    auto* m = protobuf_c_message_unpack(&type, nullptr, entry.size(), entry.data());
    if (!m) return std::string("protobuf-c cannot decode it");
    return unpacked<Message>(reinterpret_cast<Message*>(m));
}

std::vector<std::uint32_t> words(std::size_t n, const std::uint32_t* p) { return {p, p + n}; }

gate_result<thread_creds> creds_of_core(const std::string& file, const bytes& image) {
    auto bad = [&](std::string why) { return image_refusal{fmt::format("{} is not a valid core image: {}", file, why)}; };
    auto core = decode_first<CoreEntry>(image, core_magic, true, core_entry__descriptor);
    if (auto* problem = std::get_if<std::string>(&core)) return bad(*problem);
    auto& c = *std::get<unpacked<CoreEntry>>(core);
    // Without them CRIU restores the thread with its own (root's) credentials.
    if (!c.thread_core || !c.thread_core->creds) return bad("it holds no credentials");
    auto& k = *c.thread_core->creds;
    return thread_creds{file,
                        k.uid,
                        k.euid,
                        k.suid,
                        k.fsuid,
                        k.gid,
                        k.egid,
                        k.sgid,
                        k.fsgid,
                        words(k.n_groups, k.groups),
                        words(k.n_cap_inh, k.cap_inh),
                        words(k.n_cap_prm, k.cap_prm),
                        words(k.n_cap_eff, k.cap_eff),
                        words(k.n_cap_amb, k.cap_amb),
                        words(k.n_cap_bnd, k.cap_bnd),
                        k.secbits};
}

gate_result<ghost_file> ghost_of(const std::string& file, const bytes& image) {
    auto bad = [&](std::string why) { return image_refusal{fmt::format("{} is not a valid ghost file: {}", file, why)}; };
    auto ghost = decode_first<GhostFileEntry>(image, ghost_file_magic, false, ghost_file_entry__descriptor);
    if (auto* problem = std::get_if<std::string>(&ghost)) return bad(*problem);
    auto& g = *std::get<unpacked<GhostFileEntry>>(ghost);
    return ghost_file{file, g.uid, g.gid, g.mode, g.has_rdev ? g.rdev : 0};
}

bool all_of_kind(std::string_view s, bool hex) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [hex](char c) {
        return (c >= '0' && c <= '9') || (hex && c >= 'a' && c <= 'f');
    });
}

// "core-" + digits + ".img" and the like.
bool numbered(std::string_view name, std::string_view prefix, bool hex = false) {
    if (!name.starts_with(prefix) || !name.ends_with(".img")) return false;
    return all_of_kind(name.substr(prefix.size(), name.size() - prefix.size() - 4), hex);
}

// What CRIU 4.2 writes for the processes rfork forks (tests/fuzz/make_image_seeds
// dumps them): one process or several, threads, pipes, terminals, TCP and
// unix sockets, deleted files.
bool expected_file(std::string_view name) {
    for (auto prefix : {"core-", "fdinfo-", "fs-", "ids-", "mm-", "pagemap-", "pages-", "timens-"})
        if (numbered(name, prefix)) return true;
    if (numbered(name, "ghost-file-", true) || numbered(name, "tcp-stream-", true)) return true;
    for (auto exact : {"inventory.img", "pstree.img", "files.img", "seccomp.img", "stats-dump", "pipes-data.img",
                       "fifo-data.img", "sk-queues.img", "tty-info.img", "tty-data.img", "remap-fpath.img"})
        if (name == exact) return true;
    return false;
}

bool namespace_file(std::string_view name) {
    for (auto prefix : {"userns-", "netns-", "mountpoints-", "ipcns-", "utsns-", "pidns-", "cgroup", "netdev-",
                        "ifaddr-", "route-", "route6-", "rule-", "iptables-", "ip6tables-", "nftables-", "tmpfs-"})
        if (name.starts_with(prefix)) return true;
    return false;
}

std::string list(const std::vector<std::uint32_t>& v) {
    return v.empty() ? "none" : fmt::format("{}", fmt::join(v, ","));
}

std::vector<std::uint32_t> sorted(std::vector<std::uint32_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

bool any_set(const std::vector<std::uint32_t>& v) {
    return std::any_of(v.begin(), v.end(), [](std::uint32_t w) { return w != 0; });
}

// A capability set as CRIU restores it: its first two words, a missing one
// all zero (criu/cr-restore.c, copy_caps).
std::uint64_t cap_bits(const std::vector<std::uint32_t>& v) {
    return (v.size() > 0 ? v[0] : 0) | (v.size() > 1 ? std::uint64_t(v[1]) << 32 : 0);
}

// linux/capability.h, by number.
constexpr const char* cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"};

std::string cap_list(std::uint64_t bits) {
    std::vector<std::string> names;
    for (std::size_t i = 0; i < 64; ++i)
        if (bits >> i & 1)
            names.push_back(i < std::size(cap_names) ? cap_names[i] : fmt::format("capability {}", i));
    return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

std::optional<std::uint64_t> max_image_file_size(std::string_view name) {
    if (name.starts_with("pages-") && name.ends_with(".img")) return std::nullopt;
    if (name.starts_with("core-") && name.ends_with(".img")) return max_core_image;
    return max_other_image;
}

bool uid_allowed(const image_policy& policy, std::uint32_t uid) {
    // Only the uids named: uid numbers differ between machines, and a uid
    // that is nobody's on the sender may be a service's here.
    return std::find(policy.allow_uids.begin(), policy.allow_uids.end(), uid) != policy.allow_uids.end();
}

gate_result<image_facts> read_image_facts(const std::vector<std::string>& files, const image_file_reader& read) {
    image_facts facts;
    facts.files = files;
    std::sort(facts.files.begin(), facts.files.end());
    for (auto& name : facts.files) {
        bool core = name.starts_with("core-") && name.ends_with(".img");
        bool ghost = name.starts_with("ghost-file-") && name.ends_with(".img");
        if (!core && !ghost) continue;
        auto image = read(name, core ? max_core_image + 1 : ghost_prefix);
        if (!image) return image_refusal{fmt::format("cannot read {} of the image", name)};
        if (core && image->size() > max_core_image)
            return image_refusal{fmt::format("{} is larger than any core image CRIU writes", name)};
        if (core) {
            auto creds = creds_of_core(name, *image);
            if (auto* refused = std::get_if<image_refusal>(&creds)) return *refused;
            facts.threads.push_back(std::move(std::get<thread_creds>(creds)));
        } else {
            auto g = ghost_of(name, *image);
            if (auto* refused = std::get_if<image_refusal>(&g)) return *refused;
            facts.ghosts.push_back(std::move(std::get<ghost_file>(g)));
        }
    }
    return facts;
}

gate_result<image_identity> judge_image(const image_facts& facts, const image_policy& policy,
                                        const account_lookup& accounts) {
    if (facts.threads.empty()) return refuse("the image holds no process (no core-*.img)");
    // One uid and one set of groups for every thread of every process.
    auto& first = facts.threads.front();
    auto first_groups = sorted(first.groups);
    for (auto& t : facts.threads) {
        if (t.euid != t.uid || t.suid != t.uid || t.fsuid != t.uid)
            return refuse(fmt::format("{} has several user ids (uid {}, euid {}, suid {}, fsuid {}): rfork restores "
                                      "processes that run as one user",
                                      t.file, t.uid, t.euid, t.suid, t.fsuid));
        if (t.egid != t.gid || t.sgid != t.gid || t.fsgid != t.gid)
            return refuse(fmt::format("{} has several group ids (gid {}, egid {}, sgid {}, fsgid {}): rfork restores "
                                      "processes that run with one group",
                                      t.file, t.gid, t.egid, t.sgid, t.fsgid));
        if (t.uid != first.uid || t.gid != first.gid || sorted(t.groups) != first_groups)
            return refuse(fmt::format("{} runs as uid {} gid {} groups {}, but {} as uid {} gid {} groups {}: rfork "
                                      "restores processes that all run as one user",
                                      t.file, t.uid, t.gid, list(t.groups), first.file, first.uid, first.gid,
                                      list(first.groups)));
    }
    auto uid = first.uid;

    // Root's image is trusted by design: CRIU restores it as root.
    if (uid == 0) {
        if (!policy.allow_root)
            return refuse("this agent restores processes of uid 0 only when started with --allow-root");
        auto root = accounts(0);
        return image_identity{0, root ? root->gid : 0, root ? root->groups : std::vector<std::uint32_t>{}};
    }

    if (!uid_allowed(policy, uid))
        return refuse(policy.allow_uids.empty()
                          ? fmt::format("this agent restores no user's processes; start it with --allow-uid {} to "
                                        "restore those of uid {}",
                                        uid, uid)
                          : fmt::format("uid {} is not among this agent's --allow-uid", uid));
    auto account = accounts(uid);
    if (!account) return refuse(fmt::format("uid {} has no account on the receiving host", uid));

    for (auto& name : facts.files) {
        if (namespace_file(name))
            return refuse(fmt::format("the image holds {}: rfork does not restore namespaces or cgroups", name));
        if (!expected_file(name))
            return refuse(fmt::format("the image holds {}, which is not among the files CRIU writes for the processes "
                                      "rfork forks",
                                      name));
    }

    auto in_account = [&](std::uint32_t gid) {
        return std::find(account->groups.begin(), account->groups.end(), gid) != account->groups.end();
    };
    auto foreign_group = [&](const std::string& file, std::uint32_t gid) {
        return refuse(fmt::format("{} runs with group {}, which is not one of uid {}'s groups on the receiving host", file,
                                  gid, uid));
    };
    for (auto& t : facts.threads) {
        if (!in_account(t.gid)) return foreign_group(t.file, t.gid);
        for (auto g : t.groups)
            if (!in_account(g)) return foreign_group(t.file, g);
        struct {
            const char* name;
            const std::vector<std::uint32_t>& set;
        } caps[] = {{"inheritable", t.cap_inh}, {"permitted", t.cap_prm}, {"effective", t.cap_eff},
                    {"ambient", t.cap_amb}};
        for (auto& c : caps)
            if (any_set(c.set))
                return refuse(fmt::format("{} has {} capabilities: rfork restores processes of users other than root "
                                          "only without capabilities",
                                          t.file, c.name));
        if (t.secbits != 0)
            return refuse(fmt::format("{} sets securebits {:#x}: rfork restores processes of users other than root "
                                      "only without them",
                                      t.file, t.secbits));
        // CRIU, with CAP_SETPCAP, drops what the image's bounding set lacks;
        // a user could not, and a set-uid program run without CAP_SETUID
        // would keep its saved uid 0 (the sendmail bug).
        if (auto dropped = policy.bounding & ~cap_bits(t.cap_bnd))
            return refuse(fmt::format("{} drops {} from the bounding set, which a user's process cannot do: rfork "
                                      "does not restore it",
                                      t.file, cap_list(dropped)));
    }

    for (auto& g : facts.ghosts) {
        auto type = g.mode & S_IFMT;
        if (type != S_IFREG && type != S_IFDIR && type != S_IFLNK)
            return refuse(fmt::format("{} would create a device node or another special file (mode {:o}): rfork "
                                      "restores deleted regular files and directories only",
                                      g.file, g.mode));
        if (g.mode & (S_ISUID | S_ISGID))
            return refuse(fmt::format("{} would create a set-user-id or set-group-id file (mode {:o})", g.file, g.mode));
        if (g.uid != uid)
            return refuse(fmt::format("{} would create a file owned by uid {}, not by the process's uid {}", g.file,
                                      g.uid, uid));
        if (!in_account(g.gid)) return foreign_group(g.file, g.gid);
    }
    // CRIU runs with exactly the ids the image gives its processes, each
    // checked above to be the user's on this host: without CAP_SETGID it
    // could not change them to any others.
    auto& ids = facts.threads.front();
    return image_identity{uid, ids.gid, ids.groups};
}

std::optional<std::uint64_t> bounding_set_in(std::string_view status) {
    constexpr std::string_view key = "CapBnd:";
    for (std::size_t at = 0; at < status.size();) {
        auto end = std::min(status.find('\n', at), status.size());
        auto line = status.substr(at, end - at);
        at = end + 1;
        if (!line.starts_with(key)) continue;
        line.remove_prefix(key.size());
        while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
        if (line.empty() || line.size() > 16 || !all_of_kind(line, true)) return std::nullopt;
        std::uint64_t bits = 0;
        std::from_chars(line.data(), line.data() + line.size(), bits, 16);
        return bits;
    }
    return std::nullopt;
}

std::optional<std::uint64_t> own_bounding_set() {
    std::ifstream in("/proc/self/status");
    if (!in) return std::nullopt;
    std::string status((std::istreambuf_iterator<char>(in)), {});
    return bounding_set_in(status);
}

std::optional<host_account> account_of(std::uint32_t uid) {
    long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buffer(hint > 0 ? static_cast<std::size_t>(hint) : 4096);
    passwd pw{}, *found = nullptr;
    int rc;
    while ((rc = getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found)) == ERANGE && buffer.size() < (1 << 20))
        buffer.resize(buffer.size() * 2);
    if (rc != 0 || !found) return std::nullopt;
    std::vector<gid_t> groups(32);
    for (;;) {
        int n = static_cast<int>(groups.size());
        if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) >= 0) {
            groups.resize(static_cast<std::size_t>(n));
            break;
        }
        if (n <= static_cast<int>(groups.size()) || n > 65536) return std::nullopt;
        groups.resize(static_cast<std::size_t>(n));
    }
    return host_account{pw.pw_gid, std::vector<std::uint32_t>(groups.begin(), groups.end())};
}

gate_result<image_facts> read_image_dir(const std::string& images_dir) {
    struct closer {
        int fd;
        ~closer() {
            if (fd >= 0) ::close(fd);
        }
    } dir{::open(images_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (dir.fd < 0) return image_refusal{fmt::format("cannot list the image: {}", std::strerror(errno))};
    std::vector<std::string> files;
    {
        int listing = ::openat(dir.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR* d = listing >= 0 ? ::fdopendir(listing) : nullptr;
        if (!d) {
            if (listing >= 0) ::close(listing);
            return image_refusal{fmt::format("cannot list the image: {}", std::strerror(errno))};
        }
        while (auto* entry = ::readdir(d)) {
            std::string name = entry->d_name;
            if (name != "." && name != "..") files.push_back(std::move(name));
        }
        ::closedir(d);
    }
    // Sizes first, from the directory: no file beyond its cap is ever opened.
    for (auto& name : files) {
        struct stat st {};
        if (::fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            return image_refusal{fmt::format("cannot read {} of the image", name)};
        if (!S_ISREG(st.st_mode)) return image_refusal{fmt::format("{} of the image is not a regular file", name)};
        auto cap = max_image_file_size(name);
        if (cap && static_cast<std::uint64_t>(st.st_size) > *cap)
            return image_refusal{fmt::format("{} of the image is {} bytes, more than CRIU writes in such a file "
                                             "({} at most)",
                                             name, st.st_size, *cap)};
    }
    auto read = [&](const std::string& name, std::size_t max) -> std::optional<bytes> {
        closer file{::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
        struct stat st {};
        if (file.fd < 0 || ::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
        auto cap = max_image_file_size(name);
        if (cap && static_cast<std::uint64_t>(st.st_size) > *cap) return std::nullopt;
        // What the file holds, within `max`: nothing more is ever read.
        bytes data(std::min(max, static_cast<std::size_t>(st.st_size)));
        std::size_t got = 0;
        while (got < data.size()) {
            auto n = ::read(file.fd, data.data() + got, data.size() - got);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return std::nullopt;
            if (n == 0) break;
            got += static_cast<std::size_t>(n);
        }
        data.resize(got);
        return data;
    };
    return read_image_facts(files, read);
}

gate_result<image_identity> check_image_dir(const std::string& images_dir, const image_policy& policy) {
    auto facts = read_image_dir(images_dir);
    if (auto* refused = std::get_if<image_refusal>(&facts)) return *refused;
    return judge_image(std::get<image_facts>(facts), policy, account_of);
}

}  // namespace rfork::agent
