// The sending agent's side of bringing files along: which files a real CRIU
// image names (its files.img, less what CRIU recreates itself), and how each
// is described as the process sees it: inside its root, with its user's
// rights only. The cases that take a user's rights need root.
#include "send/outgoing_files.hpp"
#include "../fuzz/image_bundle.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fs = std::filesystem;
using namespace rfork::agent;

namespace {

std::vector<unsigned char> seed_file(const std::string& kind, const std::string& name) {
    std::ifstream in(std::string(RFORK_IMAGE_SEEDS) + "/" + kind + ".bin", std::ios::binary);
    std::vector<unsigned char> data((std::istreambuf_iterator<char>(in)), {});
    auto files = rfork::test::unbundle(data);
    REQUIRE(files);
    auto found = files->find(name);
    return found == files->end() ? std::vector<unsigned char>{} : found->second;
}

std::vector<std::string> paths_of(const std::vector<image_file_ref>& refs) {
    std::vector<std::string> out;
    for (auto& r : refs) out.push_back(r.path);
    return out;
}

struct temp_root {
    fs::path path;
    temp_root() {
        char name[] = "/tmp/rfork-outgoing-XXXXXX";
        path = ::mkdtemp(name);
    }
    ~temp_root() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

}  // namespace

TEST_SUITE("unit.outgoing_files") {

TEST_CASE("outgoing files: a real image names its program and libraries and working directory") {
    auto named = files_named_by(seed_file("single", "files.img"), {});
    REQUIRE(std::holds_alternative<std::vector<image_file_ref>>(named));
    auto paths = paths_of(std::get<std::vector<image_file_ref>>(named));
    std::string listed;
    for (auto& p : paths) listed += p + " ";
    INFO("paths: " << listed);
    CHECK(std::count(paths.begin(), paths.end(), "/") == 1);  // the seed's working directory
    CHECK(std::any_of(paths.begin(), paths.end(), [](auto& p) { return p.ends_with("/image_seed_program"); }));
    CHECK(std::any_of(paths.begin(), paths.end(), [](auto& p) { return p.find("/libc.so") != std::string::npos; }));
    CHECK(std::is_sorted(paths.begin(), paths.end()));
    CHECK(std::adjacent_find(paths.begin(), paths.end()) == paths.end());  // one entry per path
    for (auto& p : paths) CHECK(rfork::protocol::is_canonical_path(p));
}

TEST_CASE("outgoing files: a deleted file CRIU keeps in the image is not brought along") {
    auto files = seed_file("ghost", "files.img");
    auto remaps = seed_file("ghost", "remap-fpath.img");
    REQUIRE_FALSE(remaps.empty());
    auto with = files_named_by(files, {});
    auto without = files_named_by(files, remaps);
    REQUIRE(std::holds_alternative<std::vector<image_file_ref>>(with));
    REQUIRE(std::holds_alternative<std::vector<image_file_ref>>(without));
    auto all = paths_of(std::get<std::vector<image_file_ref>>(with));
    auto kept = paths_of(std::get<std::vector<image_file_ref>>(without));
    CHECK(kept.size() + 1 == all.size());
    CHECK(std::any_of(all.begin(), all.end(), [](auto& p) { return p.starts_with("/tmp/rfork-seed-"); }));
    CHECK(std::none_of(kept.begin(), kept.end(), [](auto& p) { return p.starts_with("/tmp/rfork-seed-"); }));
}

TEST_CASE("outgoing files: what is not a files image is refused with a reason") {
    auto core = seed_file("single", "pstree.img");
    auto named = files_named_by(core, {});
    REQUIRE(std::holds_alternative<std::string>(named));
    CHECK(std::get<std::string>(named).find("files.img") != std::string::npos);
    auto truncated = seed_file("single", "files.img");
    truncated.resize(truncated.size() - 3);
    CHECK(std::holds_alternative<std::string>(files_named_by(truncated, {})));
}

TEST_CASE("outgoing files: each file is described as found inside the process's root") {
    temp_root root;
    fs::create_directories(root.path / "usr/lib");
    std::ofstream(root.path / "usr/lib/libx.so") << "library bytes";
    ::chmod((root.path / "usr/lib/libx.so").c_str(), 0755);
    // A link that leads out of the root leads to the root's own /etc here.
    fs::create_directories(root.path / "etc");
    std::ofstream(root.path / "etc/passwd") << "the root's own";
    fs::create_symlink("/etc/passwd", root.path / "usr/lib/escape");
    int root_fd = ::open(root.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(root_fd >= 0);
    file_identity_cache ids;
    auto described = describe_files({{"/usr/lib/libx.so", false}, {"/usr/lib/escape", true}, {"/usr", false}},
                                    root_fd, nullptr, ids, 1 << 20);
    // No file over the size limit is read, let alone sent.
    auto too_large = describe_files({{"/usr/lib/libx.so", false}}, root_fd, nullptr, ids, 12);
    REQUIRE(std::holds_alternative<std::string>(too_large));
    CHECK(std::get<std::string>(too_large).find("/usr/lib/libx.so") != std::string::npos);
    CHECK(std::get<std::string>(too_large).find("--max-file-size 12") != std::string::npos);
    ::close(root_fd);
    REQUIRE(std::holds_alternative<outgoing_files>(described));
    auto& out = std::get<outgoing_files>(described);
    REQUIRE(out.manifest.files.size() == 3);
    auto& lib = out.manifest.files[0];
    CHECK(lib.kind == rfork::protocol::file_kind::regular);
    CHECK(lib.mode == 0755);
    CHECK(lib.size == 13);
    CHECK(to_hex(lib.sha256) == "8c45ce4e5a5cb0c03670ca09e153a24b1c7b7f94141c4da68f31ce8e91bc1bf8");
    CHECK(out.fds[0]);
    auto& escape = out.manifest.files[1];
    CHECK(escape.size == std::string("the root's own").size());
    CHECK(escape.writable);
    CHECK(out.manifest.files[2].kind == rfork::protocol::file_kind::directory);
    CHECK_FALSE(out.fds[2]);
}

TEST_CASE("outgoing files: a file the process's user may not read does not travel") {
    rfork_test::require_root("taking a user's rights");
    temp_root root;
    ::chmod(root.path.c_str(), 0755);
    std::ofstream(root.path / "secret") << "root's alone";
    ::chmod((root.path / "secret").c_str(), 0600);
    std::ofstream(root.path / "open") << "anyone's";
    ::chmod((root.path / "open").c_str(), 0644);
    int root_fd = ::open(root.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(root_fd >= 0);
    file_identity_cache ids;
    run_as nobody{65534, 65534, {}, 0};
    auto fine = describe_files({{"/open", false}}, root_fd, &nobody, ids, 1 << 20);
    CHECK(std::holds_alternative<outgoing_files>(fine));
    auto refused = describe_files({{"/open", false}, {"/secret", false}}, root_fd, &nobody, ids, 1 << 20);
    REQUIRE(std::holds_alternative<std::string>(refused));
    CHECK(std::get<std::string>(refused).find("/secret") != std::string::npos);
    CHECK(std::get<std::string>(refused).find("uid 65534") != std::string::npos);
    // This thread is root again afterwards.
    CHECK(::access((root.path / "secret").c_str(), R_OK) == 0);
    int fd = ::open((root.path / "secret").c_str(), O_RDONLY);
    CHECK(fd >= 0);
    if (fd >= 0) ::close(fd);
    ::close(root_fd);
}

}
