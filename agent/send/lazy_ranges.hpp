// Which pages of a lazy dump follow the child: the runs its pagemaps mark
// lazy, which the dump's CRIU keeps and serves (PS_IOV_GET) until the child
// has them. The sending agent streams them all, in this order.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace rfork::agent {

struct lazy_range {
    std::uint64_t process = 0;  // the pid the image names (pagemap-PID.img)
    std::uint64_t address = 0;
    std::uint64_t pages = 0;
    friend bool operator==(const lazy_range&, const lazy_range&) = default;
};

// The lazy runs of one pagemap image of `process` (its bytes), in the
// image's order; or why they cannot be read.
std::variant<std::vector<lazy_range>, std::string> lazy_ranges_of(const std::vector<unsigned char>& pagemap,
                                                                  std::uint64_t process);

// Those of every process of the images in `images_dir_fd`, sorted by
// process and address.
std::variant<std::vector<lazy_range>, std::string> lazy_ranges_in(int images_dir_fd);

}  // namespace rfork::agent
