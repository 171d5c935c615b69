// Room for the pages that have arrived and wait for the lazy-pages daemon:
// slabs of memory asked of the kernel in huge pages where it gives them (a
// fault per 4 KiB page is slow, in a virtual machine above all), each page's
// slot used again once the daemon has taken it, so the room held is what
// waits at the busiest moment, never all the memory that passed.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace rfork::agent {

class page_pool {
public:
    static constexpr std::size_t page = 4096, slab = std::size_t{64} << 20;

    page_pool() = default;
    page_pool(const page_pool&) = delete;
    page_pool& operator=(const page_pool&) = delete;
    ~page_pool() { clear(); }

    // A free page's room, or nullptr if the kernel has no more to give.
    unsigned char* take() {
        if (!free_.empty()) {
            auto* slot = free_.back();
            free_.pop_back();
            return slot;
        }
        if (left_ == 0) {
            void* m = ::mmap(nullptr, slab, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) return nullptr;
            ::madvise(m, slab, MADV_HUGEPAGE);  // a hint: without it, pages come one by one
            slabs_.push_back(m);
            next_ = static_cast<unsigned char*>(m);
            left_ = slab / page;
        }
        --left_;
        return std::exchange(next_, next_ + page);
    }

    void give_back(unsigned char* slot) { free_.push_back(slot); }

    // Every slot goes back to the kernel.
    void clear() {
        for (void* m : slabs_) ::munmap(m, slab);
        slabs_.clear();
        free_.clear();
        next_ = nullptr;
        left_ = 0;
    }

private:
    std::vector<void*> slabs_;
    std::vector<unsigned char*> free_;
    unsigned char* next_ = nullptr;
    std::size_t left_ = 0;
};

}  // namespace rfork::agent
