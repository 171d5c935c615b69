// rfork's wire format, shared by the library and the agent.
//
// A connection starts with one handshake from each side that speaks (16 bytes):
//
//   offset 0  "RFRK"         magic
//          4  u16 version    protocol_version
//          6  u8  role       who is speaking, see `role`
//          7  u8  flags      0
//          8  u32 reserved   0
//         12  u32 crc32c     of bytes 0..11
//
// and then carries frames, each a 12-byte header and a payload:
//
//   offset 0  u16 type       see `message_type`
//          2  u16 flags      0
//          4  u32 length     payload bytes that follow
//          8  u32 crc32c     of header bytes 0..7, then of the payload
//
// All integers are big-endian. The frame layout does not depend on the version,
// so a peer of another version can always read the error frame that refuses it.
#pragma once

#include <rfork/detail/crc32c.hpp>
#include <rfork/detail/wire.hpp>
#include <rfork/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rfork::protocol {

using detail::bytes;

inline constexpr std::array<unsigned char, 4> magic = {'R', 'F', 'R', 'K'};
inline constexpr std::uint16_t protocol_version = 4;
inline constexpr std::size_t handshake_size = 16;
inline constexpr std::size_t frame_header_size = 12;
// No frame may be larger than this, whatever a receiver allows.
inline constexpr std::uint32_t max_frame_payload = 16u << 20;
inline constexpr std::size_t max_text = 4096;  // any string inside a message
// The largest frame of a conversation's control part (requests, answers,
// manifests), which every reader of one passes as its limit. Only image,
// file and page data frames may be larger, up to max_frame_payload.
inline constexpr std::uint32_t max_control_payload = 64u * 1024;

enum class role : std::uint8_t {
    program = 1,  // a program asking its local agent to fork it
    sender = 2,   // an agent sending a checkpoint image to restore
    agent = 3,    // an agent answering either of them
};

enum class message_type : std::uint16_t {
    error = 1,         // error_message: the request failed
    fork_request = 2,  // program -> local agent (with its stdio fds, SCM_RIGHTS)
    fork_reply = 3,    // agent -> program (parent) or -> restored child

    image_begin = 16,  // sender -> receiver: what is coming
    image_file = 17,   // sender -> receiver: one image file starts
    image_data = 18,   // sender -> receiver: raw bytes of the current file
    image_end = 19,    // sender -> receiver: all files sent, restore now
    restored = 20,     // receiver -> sender: the child runs
    // Lazy pages: the child's memory follows it. The sender streams every
    // page at once, the receiver answers its `criu lazy-pages` from what has
    // arrived and asks for what it lacks first.
    page_push = 21,    // sender -> receiver: pages of the child's memory (page_push_head, then whole pages)
    page_end = 22,     // either way: no more pages (the sender's ran out; the receiver's child has them all)
    // The files the image names (its program, libraries, open files), so
    // that the receiver holds them before it restores:
    file_manifest = 23,  // sender -> receiver, right after image_begin: each file, described
    file_request = 24,   // receiver -> sender: which of them it lacks (maybe none)
    file_data = 25,      // sender -> receiver, after image_end: raw bytes of the files asked for, in order
    files_end = 26,      // sender -> receiver: all of them sent
    page_want = 27,      // receiver -> sender: these pages before any other (page_want)
    // Instead of an image (rfork-agent doctor --peer), at the end of the
    // agents' range so the image's messages can grow: who answers here?
    probe_request = 30,  // sender -> receiver
    probe_reply = 31,    // receiver -> sender, which then closes

    // On the same connection, for the child's life:
    child_output = 32,  // receiver -> sender: bytes the child wrote (child_output)
    child_input = 33,   // sender -> receiver: bytes for the child's stdin (raw payload)
    child_input_end = 34,  // sender -> receiver: the parent's stdin ended
    child_exit = 35,    // receiver -> sender: the child ended (child_exit); last frame
    signal_child = 36,  // sender -> receiver: deliver a signal (signal_child)

    // Program (or rfork-agent CLI) -> local agent, each on a connection of its own:
    wait_request = 48,  // wait for a child of this host's programs to end
    wait_reply = 49,
    kill_request = 50,  // signal such a child
    kill_reply = 51,
    list_request = 52,  // the children running on this host
    list_reply = 53,
};

inline bool is_known(message_type t) {
    switch (t) {
    case message_type::error:
    case message_type::fork_request:
    case message_type::fork_reply:
    case message_type::image_begin:
    case message_type::image_file:
    case message_type::image_data:
    case message_type::image_end:
    case message_type::restored:
    case message_type::page_push:
    case message_type::page_end:
    case message_type::page_want:
    case message_type::file_manifest:
    case message_type::file_request:
    case message_type::file_data:
    case message_type::files_end:
    case message_type::probe_request:
    case message_type::probe_reply:
    case message_type::child_output:
    case message_type::child_input:
    case message_type::child_input_end:
    case message_type::child_exit:
    case message_type::signal_child:
    case message_type::wait_request:
    case message_type::wait_reply:
    case message_type::kill_request:
    case message_type::kill_reply:
    case message_type::list_request:
    case message_type::list_reply: return true;
    }
    return false;
}

// ---- handshake ------------------------------------------------------------

struct handshake {
    std::uint16_t version = protocol_version;
    role who = role::program;
};

inline std::array<unsigned char, handshake_size> encode_handshake(role who,
                                                                std::uint16_t version = protocol_version) {
    bytes out;
    detail::wire_writer w(out);
    w.raw(magic);
    w.u16(version);
    w.u8(static_cast<std::uint8_t>(who));
    w.u8(0);
    w.u32(0);
    w.u32(detail::crc32c(out));
    std::array<unsigned char, handshake_size> result{};
    std::copy(out.begin(), out.end(), result.begin());
    return result;
}

inline std::error_code decode_handshake(std::span<const unsigned char> in, handshake& out) {
    if (in.size() < handshake_size) return errc::truncated;
    if (!std::equal(magic.begin(), magic.end(), in.begin())) return errc::bad_magic;
    detail::wire_reader r(in.subspan(4, handshake_size - 4));
    out.version = r.u16();
    auto who = r.u8();
    auto flags = r.u8();
    auto reserved = r.u32();
    auto crc = r.u32();
    if (crc != detail::crc32c(in.first(12))) return errc::bad_checksum;
    if (out.version != protocol_version) return errc::unsupported_version;
    if (flags != 0 || reserved != 0) return errc::bad_header;
    if (who < 1 || who > 3) return errc::unknown_role;
    out.who = static_cast<role>(who);
    return {};
}

// ---- frames ---------------------------------------------------------------

struct frame_header {
    message_type type{};
    std::uint32_t length = 0;
    std::uint32_t crc = 0;
};

inline std::uint32_t frame_crc(std::span<const unsigned char> header8, std::span<const unsigned char> payload) {
    return detail::crc32c(payload, detail::crc32c(header8));
}

// The whole frame, header and payload, ready to write.
inline bytes encode_frame(message_type type, std::span<const unsigned char> payload) {
    bytes out;
    out.reserve(frame_header_size + payload.size());
    detail::wire_writer w(out);
    w.u16(static_cast<std::uint16_t>(type));
    w.u16(0);
    w.u32(static_cast<std::uint32_t>(payload.size()));
    w.u32(frame_crc(std::span(out).first(8), payload));
    w.raw(payload);
    return out;
}

// Writes the header of a frame whose payload was filled in place after
// frame_header_size bytes left free at the start of `frame`.
inline void seal_frame(message_type type, std::span<unsigned char> frame) {
    bytes header;
    header.reserve(frame_header_size);
    detail::wire_writer w(header);
    w.u16(static_cast<std::uint16_t>(type));
    w.u16(0);
    w.u32(static_cast<std::uint32_t>(frame.size() - frame_header_size));
    w.u32(frame_crc(header, frame.subspan(frame_header_size)));
    std::copy(header.begin(), header.end(), frame.begin());
}

// Checks what can be checked before the payload is read: the length against
// `limit` (so a hostile length never makes us allocate) and reserved bits.
// An unknown type is reported only after the checksum proves it was sent so.
inline std::error_code decode_frame_header(std::span<const unsigned char> in, frame_header& out,
                                           std::uint32_t limit = max_frame_payload) {
    if (in.size() < frame_header_size) return errc::truncated;
    detail::wire_reader r(in.first(frame_header_size));
    out.type = static_cast<message_type>(r.u16());
    auto flags = r.u16();
    out.length = r.u32();
    out.crc = r.u32();
    if (out.length > limit || out.length > max_frame_payload) return errc::frame_too_large;
    if (flags != 0) return errc::bad_header;
    return {};
}

inline std::error_code check_frame(std::span<const unsigned char> header, const frame_header& h,
                                   std::span<const unsigned char> payload) {
    if (payload.size() != h.length) return errc::truncated;
    if (frame_crc(header.first(8), payload) != h.crc) return errc::bad_checksum;
    if (!is_known(h.type)) return errc::unexpected_message;
    return {};
}

// ---- messages -------------------------------------------------------------
// Each message is a struct with its `type`, an `encode` into a payload and a
// `decode` from one that rejects anything but an exact, well-formed payload.

struct error_message {
    static constexpr message_type type = message_type::error;
    std::error_code code;  // always in rfork's category on the wire
    std::string text;      // what the user should read, e.g. CRIU's own line

    void encode(detail::wire_writer& w) const {
        w.u16(static_cast<std::uint16_t>(code.category() == category() ? code.value()
                                                                        : int(errc::internal_error)));
        w.str(text.substr(0, max_text));
    }
    bool decode(detail::wire_reader& r) {
        auto value = r.u16();
        code = errc(value);
        text = r.str(max_text);
        return value != 0;
    }
};

struct fork_request {
    static constexpr message_type type = message_type::fork_request;
    static constexpr std::uint32_t forward_stdin = 1;  // flag: the child reads the parent's stdin
    // flag: dump a snapshot of the caller, a child of it, named by a pidfd
    // after the stdio fds; its socket's inode is socket_inode.
    static constexpr std::uint32_t snapshot = 2;
    // The most fds it carries: stdout, stderr, maybe stdin, maybe a snapshot's pidfd.
    static constexpr std::size_t max_fds = 4;
    std::string endpoint;            // "host:port" of the remote agent
    std::uint64_t socket_inode = 0;  // inode of the program's end of this connection
    std::uint32_t flags = 0;

    void encode(detail::wire_writer& w) const { w.str(endpoint), w.u64(socket_inode), w.u32(flags); }
    bool decode(detail::wire_reader& r) {
        endpoint = r.str(max_text);
        socket_inode = r.u64();
        flags = r.u32();
        return !endpoint.empty() && socket_inode != 0 && (flags & ~(forward_stdin | snapshot)) == 0;
    }
};

enum class fork_side : std::uint8_t { parent = 1, child = 2 };

struct fork_reply {
    static constexpr message_type type = message_type::fork_reply;
    fork_side side = fork_side::parent;
    std::string child_id;  // the receiving agent's name for the child
    std::string host;      // the receiving agent's host name
    std::uint32_t pid = 0; // the child's pid, inside its own pid namespace

    void encode(detail::wire_writer& w) const {
        w.u8(static_cast<std::uint8_t>(side)), w.str(child_id), w.str(host), w.u32(pid);
    }
    bool decode(detail::wire_reader& r) {
        auto s = r.u8();
        side = static_cast<fork_side>(s);
        child_id = r.str(max_text);
        host = r.str(max_text);
        pid = r.u32();
        return (s == 1 || s == 2) && !child_id.empty() && pid != 0;
    }
};

// The parent's stdin, stdout and stderr, named as CRIU names them for
// --inherit-fd ("pipe:[123]", "tty[88:5]", "socket:[9]", "file[1b:2a3]"), so the
// receiver can put its own pipes in their place. Empty: leave that fd alone.
using stdio_keys = std::array<std::string, 3>;

struct image_begin {
    static constexpr message_type type = message_type::image_begin;
    std::string origin_host;         // the sending agent's host name
    std::uint32_t pid = 0;           // the checkpointed process
    std::uint64_t socket_inode = 0;  // its end of the connection to its agent
    stdio_keys stdio;
    std::uint64_t total_size = 0;    // bytes of all image files that follow
    // flag: the memory follows the restore (page_push frames)
    static constexpr std::uint32_t lazy_pages = 1;
    std::uint32_t flags = 0;
    std::uint64_t memory_size = 0;  // with lazy_pages: bytes of the memory that follows

    void encode(detail::wire_writer& w) const {
        w.str(origin_host), w.u32(pid), w.u64(socket_inode);
        for (auto& key : stdio) w.str(key);
        w.u64(total_size), w.u32(flags), w.u64(memory_size);
    }
    bool decode(detail::wire_reader& r) {
        origin_host = r.str(max_text);
        pid = r.u32();
        socket_inode = r.u64();
        for (auto& key : stdio) key = r.str(max_text);
        total_size = r.u64();
        flags = r.u32();
        memory_size = r.u64();
        return pid != 0 && socket_inode != 0 && (flags & ~lazy_pages) == 0 && (memory_size == 0 || (flags & lazy_pages));
    }
};

struct image_file {
    static constexpr message_type type = message_type::image_file;
    std::string name;  // a plain file name: no '/', not "." or ".."
    std::uint64_t size = 0;

    void encode(detail::wire_writer& w) const { w.str(name), w.u64(size); }
    bool decode(detail::wire_reader& r) {
        name = r.str(255);
        size = r.u64();
        return !name.empty() && name != "." && name != ".." &&
               name.find_first_of(std::string_view("/\0", 2)) == std::string::npos;
    }
};

struct image_end {
    static constexpr message_type type = message_type::image_end;
    void encode(detail::wire_writer&) const {}
    bool decode(detail::wire_reader&) { return true; }
};

// A path as the image names a file: absolute and canonical (no empty, "."
// or ".." component, no trailing '/', no NUL), at most 4095 bytes.
inline bool is_canonical_path(std::string_view path) {
    if (path.empty() || path[0] != '/' || path.size() > 4095) return false;
    if (path == "/") return true;
    if (path.back() == '/' || path.find('\0') != std::string_view::npos) return false;
    for (std::size_t start = 1; start <= path.size();) {
        auto end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        auto part = path.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

enum class file_kind : std::uint8_t {
    regular = 1,
    directory = 2,
    char_device = 3,
    block_device = 4,
    fifo = 5,
    socket = 6,
};

// One file the image names, as the sending agent found it.
struct file_description {
    static constexpr std::size_t max_build_id = 64;
    std::string path;                      // is_canonical_path
    file_kind kind = file_kind::regular;
    std::uint32_t mode = 0;                // permission bits (07777)
    std::uint32_t uid = 0, gid = 0;        // its owner
    std::uint64_t size = 0;                // regular files: bytes
    std::int64_t mtime_ns = 0;
    std::uint64_t rdev = 0;                // devices: major and minor, as the kernel encodes them
    std::array<unsigned char, 32> sha256{};// regular files: of the content
    bytes build_id;                        // ELF files that have one
    bool writable = false;                 // the process has it open or mapped for writing

    void encode(detail::wire_writer& w) const {
        w.str(path), w.u8(static_cast<std::uint8_t>(kind)), w.u32(mode), w.u32(uid), w.u32(gid), w.u64(size);
        w.u64(static_cast<std::uint64_t>(mtime_ns)), w.u64(rdev), w.raw(sha256);
        w.u8(static_cast<std::uint8_t>(build_id.size())), w.raw(build_id), w.u8(writable ? 1 : 0);
    }
    bool decode(detail::wire_reader& r) {
        path = r.str(4095);
        auto k = r.u8();
        kind = static_cast<file_kind>(k);
        mode = r.u32(), uid = r.u32(), gid = r.u32(), size = r.u64();
        mtime_ns = static_cast<std::int64_t>(r.u64());
        rdev = r.u64();
        for (auto& b : sha256) b = r.u8();
        auto n = r.u8();
        build_id.clear();
        for (unsigned i = 0; i < n && r.ok(); ++i) build_id.push_back(r.u8());
        auto w = r.u8();
        writable = w == 1;
        return r.ok() && is_canonical_path(path) && k >= 1 && k <= 6 && (mode & ~07777u) == 0 &&
               n <= max_build_id && w <= 1;
    }
};

struct file_manifest {
    static constexpr message_type type = message_type::file_manifest;
    static constexpr std::uint32_t max_files = 4096;
    std::vector<file_description> files;

    void encode(detail::wire_writer& w) const {
        w.u32(static_cast<std::uint32_t>(files.size()));
        for (auto& f : files) f.encode(w);
    }
    bool decode(detail::wire_reader& r) {
        auto n = r.u32();
        if (n > max_files) return false;
        files.clear();
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            file_description f;
            if (!f.decode(r)) return false;
            files.push_back(std::move(f));
        }
        return r.ok();
    }
};

// Indices into the manifest, ascending: the files whose bytes follow
// (file_data frames, each file whole in this order, then files_end; after
// an empty request, nothing).
struct file_request {
    static constexpr message_type type = message_type::file_request;
    std::vector<std::uint32_t> wanted;

    void encode(detail::wire_writer& w) const {
        w.u32(static_cast<std::uint32_t>(wanted.size()));
        for (auto i : wanted) w.u32(i);
    }
    bool decode(detail::wire_reader& r) {
        auto n = r.u32();
        if (n > file_manifest::max_files) return false;
        wanted.clear();
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            auto index = r.u32();
            if (!wanted.empty() && index <= wanted.back()) return false;
            wanted.push_back(index);
        }
        return r.ok();
    }
};

struct files_end {
    static constexpr message_type type = message_type::files_end;
    void encode(detail::wire_writer&) const {}
    bool decode(detail::wire_reader&) { return true; }
};

// Lazy pages are whole pages of this size (x86-64's, as CRIU counts them).
inline constexpr std::uint64_t page_size = 4096;
// The most pages one page_push carries, and one page_want names.
inline constexpr std::uint64_t max_push_pages = 1024, max_want_pages = 1024;

// True if `pages` pages from `address` are a run of whole pages of user
// memory: aligned, at least one, at most `most`, not wrapping around.
inline bool is_page_run(std::uint64_t address, std::uint64_t pages, std::uint64_t most) {
    return address % page_size == 0 && pages >= 1 && pages <= most && address <= ~std::uint64_t{0} - pages * page_size;
}

// A page_push payload starts with this head, and whole pages follow it in the
// same frame: the sender fills them in place (seal_frame), the receiver keeps
// the payload as it came.
struct page_push_head {
    static constexpr std::size_t size = 16;
    std::uint64_t process = 0;  // the pid the image names the process by
    std::uint64_t address = 0;  // of the first page
};

inline void put_page_push_head(std::span<unsigned char> payload, const page_push_head& head) {
    for (std::size_t i = 0; i < 8; ++i) {
        payload[i] = static_cast<unsigned char>(head.process >> (8 * (7 - i)));
        payload[8 + i] = static_cast<unsigned char>(head.address >> (8 * (7 - i)));
    }
}

// The head of a page_push and how many pages follow it.
inline std::error_code decode_page_push(std::span<const unsigned char> payload, page_push_head& head,
                                        std::uint64_t& pages) {
    if (payload.size() <= page_push_head::size || (payload.size() - page_push_head::size) % page_size != 0)
        return errc::malformed_message;
    detail::wire_reader r(payload.first(page_push_head::size));
    head.process = r.u64();
    head.address = r.u64();
    pages = (payload.size() - page_push_head::size) / page_size;
    if (!is_page_run(head.address, pages, max_push_pages)) return errc::malformed_message;
    return {};
}

struct page_want {
    static constexpr message_type type = message_type::page_want;
    std::uint64_t process = 0, address = 0, pages = 0;

    void encode(detail::wire_writer& w) const { w.u64(process), w.u64(address), w.u64(pages); }
    bool decode(detail::wire_reader& r) {
        process = r.u64(), address = r.u64(), pages = r.u64();
        return is_page_run(address, pages, max_want_pages);
    }
};

struct restored {
    static constexpr message_type type = message_type::restored;
    std::string child_id;
    std::string host;
    std::uint32_t pid = 0;

    void encode(detail::wire_writer& w) const { w.str(child_id), w.str(host), w.u32(pid); }
    bool decode(detail::wire_reader& r) {
        child_id = r.str(max_text);
        host = r.str(max_text);
        pid = r.u32();
        return !child_id.empty() && pid != 0;
    }
};

// A sending agent's question instead of an image: the connection, the
// credentials and both handshakes work; who is there? Nothing is restored.
struct probe_request {
    static constexpr message_type type = message_type::probe_request;
    void encode(detail::wire_writer&) const {}
    bool decode(detail::wire_reader&) { return true; }
};

struct probe_reply {
    static constexpr message_type type = message_type::probe_reply;
    std::string host;                          // the receiving agent's host name
    std::uint16_t version = protocol_version;  // the protocol it speaks
    std::string no_lazy_pages;                 // why it takes no lazy pages; empty: it does

    void encode(detail::wire_writer& w) const {
        w.str(host.substr(0, max_text)), w.u16(version), w.str(no_lazy_pages.substr(0, max_text));
    }
    bool decode(detail::wire_reader& r) {
        host = r.str(max_text);
        version = r.u16();
        no_lazy_pages = r.str(max_text);
        return version != 0;
    }
};

enum class output_stream : std::uint8_t { stdout_stream = 1, stderr_stream = 2 };

// A chunk of the child's output: which stream, then the bytes.
struct child_output {
    static constexpr message_type type = message_type::child_output;
    output_stream stream = output_stream::stdout_stream;
    bytes data;

    void encode(detail::wire_writer& w) const { w.u8(static_cast<std::uint8_t>(stream)), w.raw(data); }
    bool decode(detail::wire_reader& r) {
        auto s = r.u8();
        stream = static_cast<output_stream>(s);
        data = r.rest();
        return s == 1 || s == 2;
    }
};

struct child_exit {
    static constexpr message_type type = message_type::child_exit;
    std::uint32_t status = 0;  // the exit code, or 128 + the signal that ended it

    void encode(detail::wire_writer& w) const { w.u32(status); }
    bool decode(detail::wire_reader& r) {
        status = r.u32();
        return status <= 255;
    }
};

struct signal_child {
    static constexpr message_type type = message_type::signal_child;
    std::uint32_t signal = 0;

    void encode(detail::wire_writer& w) const { w.u32(signal); }
    bool decode(detail::wire_reader& r) {
        signal = r.u32();
        return signal >= 1 && signal <= 64;
    }
};

struct wait_request {
    static constexpr message_type type = message_type::wait_request;
    std::string child_id;

    void encode(detail::wire_writer& w) const { w.str(child_id); }
    bool decode(detail::wire_reader& r) {
        child_id = r.str(max_text);
        return !child_id.empty();
    }
};

struct wait_reply {
    static constexpr message_type type = message_type::wait_reply;
    std::uint32_t status = 0;  // as child_exit

    void encode(detail::wire_writer& w) const { w.u32(status); }
    bool decode(detail::wire_reader& r) {
        status = r.u32();
        return status <= 255;
    }
};

// Signals a child: of this host's programs (a parent), or running on this
// host (rfork-agent kill).
struct kill_request {
    static constexpr message_type type = message_type::kill_request;
    std::string child_id;
    std::uint32_t signal = 15;

    void encode(detail::wire_writer& w) const { w.str(child_id), w.u32(signal); }
    bool decode(detail::wire_reader& r) {
        child_id = r.str(max_text);
        signal = r.u32();
        return !child_id.empty() && signal >= 1 && signal <= 64;
    }
};

struct kill_reply {
    static constexpr message_type type = message_type::kill_reply;
    void encode(detail::wire_writer&) const {}
    bool decode(detail::wire_reader&) { return true; }
};

struct list_request {
    static constexpr message_type type = message_type::list_request;
    void encode(detail::wire_writer&) const {}
    bool decode(detail::wire_reader&) { return true; }
};

struct hosted_child {
    std::string id;
    std::string origin_host;
    std::uint32_t pid = 0;          // inside its pid namespace
    std::string state;              // "running" or "exited N"
    std::uint64_t age_ms = 0;
};

struct list_reply {
    static constexpr message_type type = message_type::list_reply;
    static constexpr std::uint32_t max_children = 65536;
    std::vector<hosted_child> children;

    void encode(detail::wire_writer& w) const {
        w.u32(static_cast<std::uint32_t>(children.size()));
        for (auto& c : children) w.str(c.id), w.str(c.origin_host), w.u32(c.pid), w.str(c.state), w.u64(c.age_ms);
    }
    bool decode(detail::wire_reader& r) {
        auto n = r.u32();
        if (n > max_children) return false;
        children.clear();
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            hosted_child c;
            c.id = r.str(max_text);
            c.origin_host = r.str(max_text);
            c.pid = r.u32();
            c.state = r.str(max_text);
            c.age_ms = r.u64();
            children.push_back(std::move(c));
        }
        return r.ok();
    }
};

template <typename Message>
bytes encode(const Message& m) {
    bytes payload;
    detail::wire_writer w(payload);
    m.encode(w);
    return encode_frame(Message::type, payload);
}

// A handshake of `who` followed by one message: how a conversation opens.
template <typename Message>
bytes encode_with_handshake(role who, const Message& m) {
    auto hello = encode_handshake(who);
    bytes out(hello.begin(), hello.end());
    auto frame = encode(m);
    out.insert(out.end(), frame.begin(), frame.end());
    return out;
}

template <typename Message>
std::error_code decode(std::span<const unsigned char> payload, Message& out) {
    detail::wire_reader r(payload);
    if (!out.decode(r) || !r.done()) return errc::malformed_message;
    return {};
}

// An error frame's payload as the error it carries; a malformed one is an
// error of its own. The text is bare on the wire: whoever shows it to a user
// says where it came from (the library prefixes "rfork: ").
inline error_message error_of(std::span<const unsigned char> payload) {
    error_message e;
    if (decode(payload, e)) e = {errc::malformed_message, "a malformed error message"};
    return e;
}

// ---- incremental decoding -------------------------------------------------

// Splits a byte stream into a handshake (if expected) and frames, checking
// everything above. For tests and fuzzing; the agents read with asio directly
// through the same functions.
class stream_decoder {
public:
    struct frame {
        message_type type{};
        bytes payload;
    };
    enum class result { need_more, handshake, frame, error };

    explicit stream_decoder(bool expect_handshake, std::uint32_t limit = max_frame_payload)
        : want_handshake_(expect_handshake), limit_(limit) {}

    void feed(std::span<const unsigned char> data) { buffer_.insert(buffer_.end(), data.begin(), data.end()); }

    // Decodes the next item. After an error the stream is dead: error() stays set.
    result next() {
        if (error_) return result::error;
        std::span<const unsigned char> in(buffer_.data() + pos_, buffer_.size() - pos_);
        if (want_handshake_) {
            if (in.size() < handshake_size) return result::need_more;
            if ((error_ = decode_handshake(in, handshake_))) return result::error;
            want_handshake_ = false;
            consume(handshake_size);
            return result::handshake;
        }
        if (in.size() < frame_header_size) return result::need_more;
        frame_header h;
        if ((error_ = decode_frame_header(in, h, limit_))) return result::error;
        if (in.size() < frame_header_size + h.length) return result::need_more;
        auto payload = in.subspan(frame_header_size, h.length);
        if ((error_ = check_frame(in, h, payload))) return result::error;
        frame_.type = h.type;
        frame_.payload.assign(payload.begin(), payload.end());
        consume(frame_header_size + h.length);
        return result::frame;
    }

    // At end of stream: anything left over is a truncated message.
    std::error_code finish() {
        if (!error_ && pos_ != buffer_.size()) error_ = errc::truncated;
        return error_;
    }

    const handshake& peer() const { return handshake_; }
    const frame& last_frame() const { return frame_; }
    std::error_code error() const { return error_; }

private:
    void consume(std::size_t n) {
        pos_ += n;
        if (pos_ == buffer_.size()) {
            buffer_.clear();
            pos_ = 0;
        } else if (pos_ > (1u << 20) && pos_ > buffer_.size() / 2) {
            // Drop what was decoded, so a stream fed in odd chunks cannot grow the buffer without end.
            buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
            pos_ = 0;
        }
    }
    bool want_handshake_;
    std::uint32_t limit_;
    bytes buffer_;
    std::size_t pos_ = 0;
    handshake handshake_;
    frame frame_;
    std::error_code error_;
};

}  // namespace rfork::protocol
