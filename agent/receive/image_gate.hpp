// The receiving agent's gate for CRIU images: what an image claims about the
// identity of its processes, read exactly as CRIU will read it, and whether
// this host restores it and as whom.
//
// A root image (--allow-root) is trusted by design: CRIU restores it as root.
// Any other image is restored by CRIU running as the image's uid; this gate is
// the second layer in front of that, and the one place that decides which
// uid, gid and groups CRIU runs with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rfork::agent {

// Who CRIU runs as for an image: its uid, with the gid and groups the image
// gives its processes, which for a uid other than 0 are all that uid's on
// this host (its account's primary and supplementary groups).
struct image_identity {
    std::uint32_t uid = 0, gid = 0;
    std::vector<std::uint32_t> groups;
};

// Which uids this agent restores (--allow-root, --allow-uid), and this
// host's bounding set (bit 1 << CAP_X), which a user's image must hold
// whole; 0 requires nothing.
struct image_policy {
    bool allow_root = false;
    std::vector<std::uint32_t> allow_uids;
    std::uint64_t bounding = 0;
};

// The one place that says whether a non-zero uid may be restored.
bool uid_allowed(const image_policy& policy, std::uint32_t uid);

// The credentials of one thread, from its core-TID.img.
struct thread_creds {
    std::string file;
    std::uint32_t uid, euid, suid, fsuid, gid, egid, sgid, fsgid;
    std::vector<std::uint32_t> groups;
    // Capability sets as CRIU stores them: 32-bit words, all zero when empty.
    std::vector<std::uint32_t> cap_inh, cap_prm, cap_eff, cap_amb, cap_bnd;
    std::uint32_t secbits;
};

// A file CRIU creates on restore from ghost-file-ID.img.
struct ghost_file {
    std::string file;
    std::uint32_t uid, gid, mode, rdev;
};

// What the gate needs to know about an image, decoded and structurally checked.
struct image_facts {
    std::vector<std::string> files;  // every file name of the image
    std::vector<thread_creds> threads;
    std::vector<ghost_file> ghosts;
};

// A user account of this host: primary group and all groups it is in.
struct host_account {
    std::uint32_t gid;
    std::vector<std::uint32_t> groups;  // supplementary groups and the primary
};
using account_lookup = std::function<std::optional<host_account>(std::uint32_t uid)>;

// Why an image is refused, written for the user whose fork it was.
struct image_refusal {
    std::string message;
};

template <typename T>
using gate_result = std::variant<T, image_refusal>;

// The most bytes CRIU writes in the image file `name` for any program rfork
// forks, well above what real ones need; nullopt for memory (pages-*.img),
// which only --max-image-size bounds. The receiver refuses a larger file as
// it is announced, and the gate before it reads any.
std::optional<std::uint64_t> max_image_file_size(std::string_view name);

// Reads file `name` of the image: its first `max_bytes` at most (the rest is
// never needed), nullopt if it cannot.
using image_file_reader =
    std::function<std::optional<std::vector<unsigned char>>(const std::string& name, std::size_t max_bytes)>;

// Decodes the core and ghost file images among `files` with CRIU's own
// formats, after a strict structural pass over each.
gate_result<image_facts> read_image_facts(const std::vector<std::string>& files, const image_file_reader& read);

// The decision, pure: one uid U in every thread, allowed by `policy`; for
// U != 0 also U's groups only, no capabilities or securebits, a bounding set
// that holds all of `policy.bounding`, only the image files rfork's forks
// need, no namespaces, no device or set-id ghost files.
gate_result<image_identity> judge_image(const image_facts& facts, const image_policy& policy,
                                        const account_lookup& accounts);

// The bounding set (CapBnd) in the text of a /proc/PID/status, nullopt if
// it holds none.
std::optional<std::uint64_t> bounding_set_in(std::string_view status);

// This agent's own bounding set, from /proc/self/status; nullopt if it
// cannot be read.
std::optional<std::uint64_t> own_bounding_set();

// This host's account of `uid` (getpwuid_r, getgrouplist).
std::optional<host_account> account_of(std::uint32_t uid);

// read_image_facts of the image in `images_dir`, once every file in it is
// known to be a regular file within max_image_file_size.
gate_result<image_facts> read_image_dir(const std::string& images_dir);

// Everything above, for the image in `images_dir`, with this host's accounts.
gate_result<image_identity> check_image_dir(const std::string& images_dir, const image_policy& policy);

}  // namespace rfork::agent
