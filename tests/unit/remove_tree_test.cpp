// remove_tree: a job's directory goes without following a symlink, entering
// another mount or leaving the tree, whatever the user who wrote in it did.
#include "common/remove_tree.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

using rfork::agent::remove_tree;
namespace fs = std::filesystem;

namespace {

// A new directory under the system's temporary one, removed with the test.
struct scratch {
    fs::path path;
    scratch() {
        std::string pattern = (fs::temp_directory_path() / "rfork-remove-tree-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()));
        path = pattern;
    }
    ~scratch() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

void write(const fs::path& p, const std::string& text = "data") { std::ofstream(p) << text; }

// Files a tree's links point at: all must survive its removal.
fs::path make_outside(const fs::path& base) {
    auto outside = base / "outside";
    fs::create_directories(outside / "deeper");
    write(outside / "keep");
    write(outside / "deeper" / "keep");
    return outside;
}

bool outside_intact(const fs::path& outside) {
    return fs::exists(outside / "keep") && fs::exists(outside / "deeper" / "keep");
}

}  // namespace

TEST_SUITE("unit.remove_tree") {
    TEST_CASE("remove_tree: symlinks to directories outside go and what they name stays") {
        scratch s;
        auto outside = make_outside(s.path);
        auto tree = s.path / "job";
        fs::create_directories(tree / "work" / "sub");
        write(tree / "work" / "criu.log");
        write(tree / "work" / "sub" / "file");
        fs::create_directory_symlink(outside, tree / "work" / "to_outside");
        fs::create_directory_symlink(outside / "deeper", tree / "work" / "sub" / "to_deeper");
        fs::create_symlink(outside / "keep", tree / "work" / "to_file");
        fs::create_directory_symlink("../../outside", tree / "relative");
        CHECK(remove_tree(tree));
        CHECK_FALSE(fs::exists(fs::symlink_status(tree)));
        CHECK(outside_intact(outside));
    }

    TEST_CASE("remove_tree: a path that is a symlink loses the link only") {
        scratch s;
        auto outside = make_outside(s.path);
        fs::create_directory_symlink(outside, s.path / "job");
        CHECK(remove_tree(s.path / "job"));
        CHECK_FALSE(fs::exists(fs::symlink_status(s.path / "job")));
        CHECK(outside_intact(outside));
    }

    TEST_CASE("remove_tree: what is missing is removed already") {
        scratch s;
        CHECK(remove_tree(s.path / "never"));
        CHECK(remove_tree(s.path / "no" / "such"));
    }

    TEST_CASE("remove_tree: a mount inside the tree is not entered") {
        scratch s;
        auto outside = make_outside(s.path);
        auto tree = s.path / "job";
        fs::create_directories(tree / "work" / "bound");
        fs::create_directories(tree / "work" / "other_fs");
        write(tree / "work" / "criu.log");
        // The same file system bound elsewhere (told apart by its mount id),
        // and another file system (by its device).
        if (::mount(outside.c_str(), (tree / "work" / "bound").c_str(), nullptr, MS_BIND, nullptr) != 0) {
            MESSAGE("cannot mount here (" << std::strerror(errno) << "): not tested");
            return;
        }
        REQUIRE(::mount("none", (tree / "work" / "other_fs").c_str(), "tmpfs", 0, "size=64k") == 0);
        write(tree / "work" / "other_fs" / "keep");
        CHECK_FALSE(remove_tree(tree));
        CHECK(outside_intact(outside));
        CHECK(fs::exists(tree / "work" / "bound" / "keep"));
        CHECK(fs::exists(tree / "work" / "other_fs" / "keep"));
        CHECK_FALSE(fs::exists(tree / "work" / "criu.log"));
        CHECK(::umount2((tree / "work" / "bound").c_str(), MNT_DETACH) == 0);
        CHECK(::umount2((tree / "work" / "other_fs").c_str(), MNT_DETACH) == 0);
        CHECK(remove_tree(tree));
        CHECK_FALSE(fs::exists(tree));
        CHECK(outside_intact(outside));
    }

    TEST_CASE("remove_tree: a directory swapped for a symlink while it goes never leads outside") {
        scratch s;
        auto outside = make_outside(s.path);
        for (int round = 0; round < 50; ++round) {
            CAPTURE(round);
            auto tree = s.path / "job";
            fs::create_directories(tree / "work" / "d");
            for (int i = 0; i < 50; ++i) write(tree / "work" / "d" / std::to_string(i));
            // The user's CRIU, through its fd to the work directory.
            int work = ::open((tree / "work").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            REQUIRE(work >= 0);
            std::atomic<bool> stop = false;
            std::thread swapper([&] {
                while (!stop) {
                    if (::renameat(work, "d", work, "moved") == 0) {
                        ::symlinkat(outside.c_str(), work, "d");
                        ::unlinkat(work, "d", 0);
                        ::renameat(work, "moved", work, "d");
                    }
                    ::symlinkat(outside.c_str(), work, "d");
                    ::mkdirat(work, "d", 0700);
                }
            });
            remove_tree(tree);
            stop = true;
            swapper.join();
            ::close(work);
            CHECK(outside_intact(outside));
            CHECK(remove_tree(tree));
            CHECK_FALSE(fs::exists(fs::symlink_status(tree)));
        }
    }

    TEST_CASE("remove_tree: a tree deeper than its bound stays and nothing outside is touched") {
        scratch s;
        auto outside = make_outside(s.path);
        auto deep = s.path / "job";
        for (int i = 0; i < 100; ++i) deep /= "d";
        fs::create_directories(deep);
        fs::create_directory_symlink(outside, deep / "link");
        CHECK_FALSE(remove_tree(s.path / "job"));
        CHECK(fs::exists(s.path / "job"));
        CHECK(outside_intact(outside));
    }
}
