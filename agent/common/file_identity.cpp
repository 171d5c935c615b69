#include "common/file_identity.hpp"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace rfork::agent {

namespace {

// Large enough that a big file costs few system calls, small enough to stay
// out of the agent's way while it holds one.
constexpr std::size_t hash_chunk = 1 << 20;

// Bounds on what a hostile ELF file can make elf_build_id read.
constexpr std::uint16_t max_program_headers = 64;
constexpr std::uint64_t max_notes_per_segment = 4 << 10;
constexpr std::uint32_t max_build_id = 64;

constexpr std::uint32_t pt_note = 4;
constexpr std::uint32_t nt_gnu_build_id = 3;
// e_phnum's "the real count is in section header 0": no program of ours has so many.
constexpr std::uint16_t pn_xnum = 0xffff;

// Reads exactly `n` bytes at `offset`; false on an error or an end of file first.
bool pread_exact(int fd, unsigned char* out, std::size_t n, std::uint64_t offset) {
    while (n > 0) {
        if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) return false;
        ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
        if (got < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (got == 0) return false;
        out += got;
        n -= static_cast<std::size_t>(got);
        offset += static_cast<std::uint64_t>(got);
    }
    return true;
}

// sha256_of, also telling how many bytes it read (for the cache's count).
std::optional<sha256_digest> hash_file(int fd, std::uint64_t size, std::uint64_t& bytes_read) {
    sha256_stream stream;
    std::vector<unsigned char> buffer(static_cast<std::size_t>(std::min<std::uint64_t>(size, hash_chunk)));
    for (std::uint64_t done = 0; done < size;) {
        auto n = static_cast<std::size_t>(std::min<std::uint64_t>(size - done, hash_chunk));
        if (!pread_exact(fd, buffer.data(), n, done)) return std::nullopt;
        stream.update(buffer.data(), n);
        done += n;
        bytes_read += n;
    }
    return stream.finish();
}

// An ELF file's fields, in its own byte order.
struct elf_reader {
    bool msb;

    std::uint64_t get(const unsigned char* p, int width) const {
        std::uint64_t v = 0;
        for (int i = 0; i < width; ++i) {
            int byte = msb ? i : width - 1 - i;
            v = (v << 8) | p[byte];
        }
        return v;
    }
    std::uint16_t u16(const unsigned char* p) const { return static_cast<std::uint16_t>(get(p, 2)); }
    std::uint32_t u32(const unsigned char* p) const { return static_cast<std::uint32_t>(get(p, 4)); }
    std::uint64_t u64(const unsigned char* p) const { return get(p, 8); }
};

// Where a program header's fields are: Elf32_Phdr and Elf64_Phdr order them differently.
struct elf_layout {
    std::size_t ehdr_size, phoff_at, phentsize_at, phnum_at;
    std::size_t phdr_size, p_offset_at, p_filesz_at, p_align_at;
    int word;  // bytes of an address or offset
};
constexpr elf_layout elf32{52, 28, 42, 44, 32, 4, 16, 28, 4};
constexpr elf_layout elf64{64, 32, 54, 56, 56, 8, 32, 48, 8};

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t align) { return (v + align - 1) & ~(align - 1); }

// The build-id among the notes read from one PT_NOTE segment: nullopt if they
// hold none, else what the first GNU build-id note says (empty if that is malformed).
std::optional<std::vector<unsigned char>> build_id_in_notes(const std::vector<unsigned char>& notes,
                                                            const elf_reader& r, std::uint64_t align) {
    constexpr std::uint64_t note_header = 12;
    const std::uint64_t end = notes.size();
    std::uint64_t at = 0;
    // Every quantity is at most end (4 KiB) plus a 32-bit size: no uint64 overflow.
    while (at + note_header <= end) {
        const std::uint64_t namesz = r.u32(&notes[at]);
        const std::uint64_t descsz = r.u32(&notes[at + 4]);
        const std::uint32_t type = r.u32(&notes[at + 8]);
        const std::uint64_t name_at = at + note_header;
        // Padding is to the alignment from the note's start (as binutils
        // reads it): with 8, a 4-byte name leaves the descriptor at 16, not 20.
        const std::uint64_t desc_at = align_up(name_at + namesz, align);
        if (desc_at > end || descsz > end - desc_at) return std::nullopt;  // runs past the segment
        if (type == nt_gnu_build_id && namesz == 4 && std::memcmp(&notes[name_at], "GNU", 4) == 0) {
            if (descsz == 0 || descsz > max_build_id) return std::vector<unsigned char>{};
            auto first = notes.begin() + static_cast<std::ptrdiff_t>(desc_at);
            return std::vector<unsigned char>(first, first + static_cast<std::ptrdiff_t>(descsz));
        }
        at = align_up(desc_at + descsz, align);
    }
    return std::nullopt;
}

}  // namespace

std::string to_hex(const sha256_digest& digest) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(digest.size() * 2);
    for (unsigned char c : digest) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 0xf]);
    }
    return out;
}

sha256_stream::sha256_stream() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_) throw std::runtime_error("sha256: EVP_MD_CTX_new failed");
    if (EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
        EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
        throw std::runtime_error("sha256: EVP_DigestInit_ex failed");
    }
}

sha256_stream::~sha256_stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void sha256_stream::update(const unsigned char* data, std::size_t size) {
    if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1)
        throw std::runtime_error("sha256: EVP_DigestUpdate failed");
}

sha256_digest sha256_stream::finish() {
    sha256_digest out{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &length) != 1 || length != out.size())
        throw std::runtime_error("sha256: EVP_DigestFinal_ex failed");
    return out;
}

std::optional<sha256_digest> sha256_of(int fd, std::uint64_t size) {
    std::uint64_t ignored = 0;
    return hash_file(fd, size, ignored);
}

std::vector<unsigned char> elf_build_id(int fd, std::uint64_t size) {
    unsigned char ehdr[64];
    if (size < 16 || !pread_exact(fd, ehdr, 16, 0)) return {};
    if (std::memcmp(ehdr, "\x7f" "ELF", 4) != 0) return {};
    const unsigned char elf_class = ehdr[4], elf_data = ehdr[5];
    if ((elf_class != 1 && elf_class != 2) || (elf_data != 1 && elf_data != 2)) return {};
    const elf_layout& l = elf_class == 2 ? elf64 : elf32;
    const elf_reader r{elf_data == 2};
    if (size < l.ehdr_size || !pread_exact(fd, ehdr + 16, l.ehdr_size - 16, 16)) return {};

    const std::uint64_t phoff = r.get(ehdr + l.phoff_at, l.word);
    const std::uint16_t phentsize = r.u16(ehdr + l.phentsize_at);
    const std::uint16_t phnum = r.u16(ehdr + l.phnum_at);
    if (phnum == 0 || phnum == pn_xnum || phentsize != l.phdr_size) return {};
    const std::uint16_t count = std::min(phnum, max_program_headers);
    const std::uint64_t table_size = std::uint64_t(count) * l.phdr_size;  // at most 64 * 56
    if (phoff > size || table_size > size - phoff) return {};
    std::vector<unsigned char> table(static_cast<std::size_t>(table_size));
    if (!pread_exact(fd, table.data(), table.size(), phoff)) return {};

    for (std::uint16_t i = 0; i < count; ++i) {
        const unsigned char* ph = table.data() + std::size_t(i) * l.phdr_size;
        if (r.u32(ph) != pt_note) continue;
        const std::uint64_t offset = r.get(ph + l.p_offset_at, l.word);
        const std::uint64_t filesz = r.get(ph + l.p_filesz_at, l.word);
        const std::uint64_t p_align = r.get(ph + l.p_align_at, l.word);
        if (offset > size || filesz > size - offset) continue;  // a lie about this segment: look at the others
        // Notes are 4-aligned, 64-bit ones too, except in a segment that says 8
        // (.note.gnu.property on x86-64).
        const std::uint64_t align = p_align == 8 ? 8 : 4;
        std::vector<unsigned char> notes(static_cast<std::size_t>(std::min(filesz, max_notes_per_segment)));
        if (!pread_exact(fd, notes.data(), notes.size(), offset)) return {};
        if (auto id = build_id_in_notes(notes, r, align)) return std::move(*id);
    }
    return {};
}

inode_version version_of(const struct stat& st) {
    // Unsigned, so that a hostile timestamp (utimensat allows ones past 2262)
    // wraps instead of overflowing; the ctime, which only the kernel sets,
    // still tells versions apart.
    auto ns = [](const timespec& t) {
        return static_cast<std::int64_t>(static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000u +
                                         static_cast<std::uint64_t>(t.tv_nsec));
    };
    return inode_version{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                         static_cast<std::uint64_t>(st.st_size), ns(st.st_mtim), ns(st.st_ctim)};
}

std::size_t file_identity_cache::key_hash::operator()(const inode_version& v) const {
    std::uint64_t h = 0;
    for (std::uint64_t field : {v.dev, v.ino, v.size, static_cast<std::uint64_t>(v.mtime_ns),
                                static_cast<std::uint64_t>(v.ctime_ns)})
        h = (h ^ field) * 0x9e3779b97f4a7c15u + (h >> 29);
    return static_cast<std::size_t>(h);
}

std::optional<file_identity> file_identity_cache::identify(int fd, const struct stat& st) {
    // A FIFO or a device has no size to hash, and may never end.
    if (!S_ISREG(st.st_mode) || st.st_size < 0) return std::nullopt;
    const inode_version version = version_of(st);
    if (auto found = index_.find(version); found != index_.end()) {
        entries_.splice(entries_.begin(), entries_, found->second);
        return found->second->second;
    }
    auto sha256 = hash_file(fd, version.size, bytes_hashed_);
    if (!sha256) return std::nullopt;
    file_identity identity{*sha256, elf_build_id(fd, version.size)};
    entries_.emplace_front(version, identity);
    index_[version] = entries_.begin();
    while (entries_.size() > capacity_) {
        index_.erase(entries_.back().first);
        entries_.pop_back();
    }
    return identity;
}

}  // namespace rfork::agent
