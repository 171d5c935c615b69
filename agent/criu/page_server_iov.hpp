// CRIU's page-server messages (criu/page-xfer.c), as its lazy-pages daemon
// asks for pages and as a lazy dump serves them: a fixed 32-byte head in the
// host's own layout, then, in an answer, the pages. Both ends are this host's
// CRIU, so the layout is this machine's; nothing of it goes on the network.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

namespace rfork::agent {

struct page_server_iov {
    std::uint32_t command = 0;
    std::uint32_t padding = 0;  // where CRIU's compiler aligns the next field
    std::uint64_t pages = 0;
    std::uint64_t address = 0;
    std::uint64_t process = 0;  // CRIU's dst_id: the pid the image names
};
static_assert(sizeof(page_server_iov) == 32, "CRIU's struct page_server_iov is 32 bytes");

namespace page_server {

inline constexpr std::uint32_t get_pages = 7;     // PS_IOV_GET: the daemon asks
inline constexpr std::uint32_t add_pages = 6;     // PS_IOV_ADD_F: pages follow
inline constexpr std::uint32_t close_session = 0x1023, force_close_session = 0x1024;  // PS_IOV_CLOSE, _FORCE_CLOSE: done, status?
inline constexpr std::uint32_t flag_present = 4;  // PE_PRESENT, in the command's upper 16 bits
inline constexpr std::uint32_t command_bits = 16;

using wire = std::array<unsigned char, sizeof(page_server_iov)>;

inline wire encode(const page_server_iov& iov) {
    wire out{};
    std::memcpy(out.data(), &iov, out.size());
    return out;
}

inline page_server_iov decode(const wire& in) {
    page_server_iov iov;
    std::memcpy(&iov, in.data(), in.size());
    return iov;
}

// The daemon's request for `pages` pages of `process` from `address`.
inline page_server_iov request(std::uint64_t process, std::uint64_t address, std::uint64_t pages) {
    return {get_pages, 0, pages, address, process};
}

// The head of an answer to `asked` carrying `pages` pages (CRIU may answer
// with fewer pages than asked, never more).
inline page_server_iov answer(const page_server_iov& asked, std::uint64_t pages) {
    return {flag_present << command_bits | add_pages, 0, pages, asked.address, asked.process};
}

// True if `got` answers `asked` as CRIU's page server does: same process and
// address, at least one page, at most those asked for.
inline bool answers(const page_server_iov& got, const page_server_iov& asked) {
    return (got.command & ((1u << command_bits) - 1)) == add_pages && got.process == asked.process &&
           got.address == asked.address && got.pages >= 1 && got.pages <= asked.pages;
}

}  // namespace page_server

}  // namespace rfork::agent
