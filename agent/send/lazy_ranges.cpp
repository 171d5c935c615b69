#include "send/lazy_ranges.hpp"

#include "common/process.hpp"
#include "criu/image_entries.hpp"

#include <rfork/protocol.hpp>

#include <pagemap.pb-c.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace rfork::agent {

namespace {

constexpr std::uint32_t pagemap_magic = 0x56084025;  // CRIU's images/magic.h
constexpr std::uint32_t pe_lazy = 1 << 1;            // CRIU's include/pagemap.h

// The pid of "pagemap-PID.img", or 0 for any other name.
std::uint64_t pagemap_process(const char* name) {
    std::string_view n(name), prefix("pagemap-"), suffix(".img");
    if (n.size() <= prefix.size() + suffix.size() || !n.starts_with(prefix) || !n.ends_with(suffix)) return 0;
    auto digits = n.substr(prefix.size(), n.size() - prefix.size() - suffix.size());
    std::uint64_t pid = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    return ec == std::errc() && end == digits.data() + digits.size() ? pid : 0;
}

}  // namespace

std::variant<std::vector<lazy_range>, std::string> lazy_ranges_of(const std::vector<unsigned char>& pagemap,
                                                                  std::uint64_t process) {
    std::vector<lazy_range> ranges;
    bool head = true;  // the first entry is a pagemap_head
    auto why = for_each_entry(pagemap, pagemap_magic, "a pagemap image", [&](const unsigned char* data, std::size_t size) {
        if (head) {
            head = false;
            return std::string();
        }
        auto* e = pagemap_entry__unpack(nullptr, size, data);
        if (!e) return std::string("an entry does not decode");
        std::uint64_t pages = e->has_nr_pages ? e->nr_pages : e->compat_nr_pages;
        bool lazy = e->has_flags && (e->flags & pe_lazy);
        std::uint64_t address = e->vaddr;
        pagemap_entry__free_unpacked(e, nullptr);
        if (!lazy) return std::string();
        if (!protocol::is_page_run(address, pages, ~std::uint64_t{0} / protocol::page_size))
            return std::string("an entry is not a run of whole pages");
        ranges.push_back({process, address, pages});
        return std::string();
    });
    if (!why.empty()) return why;
    return ranges;
}

std::variant<std::vector<lazy_range>, std::string> lazy_ranges_in(int images_dir_fd) {
    int dup = ::fcntl(images_dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR* dir = dup < 0 ? nullptr : ::fdopendir(dup);
    if (!dir) {
        if (dup >= 0) ::close(dup);
        return std::string("cannot list the image: ") + std::strerror(errno);
    }
    ::rewinddir(dir);
    std::vector<std::uint64_t> processes;
    while (auto* entry = ::readdir(dir))
        if (auto pid = pagemap_process(entry->d_name)) processes.push_back(pid);
    ::closedir(dir);

    std::vector<lazy_range> all;
    for (auto pid : processes) {
        auto name = "pagemap-" + std::to_string(pid) + ".img";
        auto bytes = read_image_file(images_dir_fd, name.c_str());
        if (!bytes) return "cannot read " + name;
        auto ranges = lazy_ranges_of(*bytes, pid);
        if (auto* why = std::get_if<std::string>(&ranges)) return *why;
        auto& these = std::get<std::vector<lazy_range>>(ranges);
        all.insert(all.end(), these.begin(), these.end());
    }
    std::sort(all.begin(), all.end(), [](const lazy_range& a, const lazy_range& b) {
        return a.process != b.process ? a.process < b.process : a.address < b.address;
    });
    return all;
}

}  // namespace rfork::agent
