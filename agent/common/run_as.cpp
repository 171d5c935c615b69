#include "common/run_as.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <grp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

namespace rfork::agent {

namespace {

int set_capability_sets(std::uint64_t bits) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    for (int i = 0; i < 2; ++i) {
        auto word = static_cast<std::uint32_t>(bits >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = word;
    }
    return ::syscall(SYS_capset, &header, data) == 0 ? 0 : errno;
}

template <typename T>
bool parse_number(std::string_view text, T& value, int base = 10) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

}  // namespace

int become(const run_as& who) {
    static_assert(sizeof(gid_t) == sizeof(std::uint32_t));
    // Raw system calls: this runs in a child cloned from the agent, which has
    // threads, and glibc's wrappers would try to change those threads' ids too.
    if (::syscall(SYS_setgroups, who.groups.size(), reinterpret_cast<const gid_t*>(who.groups.data())) != 0) return errno;
    if (::syscall(SYS_setresgid, who.gid, who.gid, who.gid) != 0) return errno;
    // Keep the permitted set across the change of uid, then cut it down.
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return errno;
    if (::syscall(SYS_setresuid, who.uid, who.uid, who.uid) != 0) return errno;
    if (int e = set_capability_sets(who.capabilities)) return e;
    if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return errno;
    for (int c = 0; c < 64; ++c)
        if (who.capabilities & run_as::bit(c))
            if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0) return errno;
    return 0;
}

int drop_capabilities() {
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return errno;
    return set_capability_sets(0);
}

std::string to_argument(const run_as& who) {
    return fmt::format("{}:{}:{}:{:x}", who.uid, who.gid, fmt::join(who.groups, ","), who.capabilities);
}

std::optional<run_as> from_argument(std::string_view text) {
    run_as who;
    auto field = [&text]() {
        auto colon = text.find(':');
        auto part = text.substr(0, colon);
        text = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
        return part;
    };
    auto uid = field(), gid = field(), groups = field(), caps = field();
    if (!parse_number(uid, who.uid) || !parse_number(gid, who.gid) || !parse_number(caps, who.capabilities, 16) ||
        !text.empty())
        return std::nullopt;
    // Empty, or numbers each followed by a comma but the last.
    for (bool more = !groups.empty(); more;) {
        auto comma = groups.find(',');
        std::uint32_t g;
        if (!parse_number(groups.substr(0, comma), g)) return std::nullopt;
        who.groups.push_back(g);
        more = comma != std::string_view::npos;
        if (more) groups.remove_prefix(comma + 1);
    }
    return who;
}

}  // namespace rfork::agent
