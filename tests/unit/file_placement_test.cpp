// Where a child finds the files its host lacks: the receiving agent's
// decision (this host's own file, a cache entry, or one to ask for), the
// plan it hands to the child's namespace init, and that plan carried out in
// a real mount namespace of a forked process: files at paths this host does
// not have, over a host's other version, copies the child may write, and
// the host's own tree untouched. The namespace cases need root.
#include "receive/file_cache.hpp"
#include "receive/file_placement.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace fs = std::filesystem;
namespace proto = rfork::protocol;
using namespace rfork::agent;

namespace {

struct temp_tree {
    fs::path path;
    temp_tree() {
        char name[] = "/tmp/rfork-placement-XXXXXX";
        path = ::mkdtemp(name);
    }
    ~temp_tree() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write_file(const fs::path& p, const std::string& text, mode_t mode = 0644) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    ::chmod(p.c_str(), mode);
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return in ? s.str() : "<unreadable>";
}

sha256_digest digest_of(const std::string& text) {
    sha256_stream s;
    s.update(reinterpret_cast<const unsigned char*>(text.data()), text.size());
    return s.finish();
}

proto::file_description regular(const std::string& path, const std::string& content, std::uint32_t mode = 0644) {
    proto::file_description f;
    f.path = path;
    f.kind = proto::file_kind::regular;
    f.mode = mode;
    f.size = content.size();
    f.sha256 = digest_of(content);
    return f;
}

// Runs `check` in a forked process with a private mount namespace of its
// own, after carrying out `plan` there; returns "placed: " + what check
// says, or why the plan failed.
std::string in_own_namespace(const placement_plan& plan, const std::function<std::string()>& check) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(pipe_fds[0]);
        std::string result;
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            result = "no namespace";
        else if (auto why = carry_out(plan); !why.empty())
            result = "failed: " + why;
        else
            result = "placed: " + check();
        [[maybe_unused]] auto n = ::write(pipe_fds[1], result.data(), result.size());
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::string result;
    char buffer[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.append(buffer, static_cast<std::size_t>(n));
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return result;
}

}  // namespace

TEST_SUITE("unit.file_placement") {

TEST_CASE("file placement: a cache entry is named by its hash mode and owner alone") {
    cache_key key{digest_of("abc"), 0755, 1000, 100};
    auto name = entry_name(key);
    CHECK(name == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad-0755-1000-100");
    auto back = parse_entry_name(name);
    REQUIRE(back);
    CHECK(*back == key);
    for (std::string bad : std::vector<std::string>{"", "x", name + "x", name.substr(1), "../" + name,
                            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD-0755-1000-100",
                            name.substr(0, 65) + "4755-1000-100", name.substr(0, 65) + "755-1000-100"})
        CHECK_MESSAGE(!parse_entry_name(bad), bad);
}

TEST_CASE("file placement: a plan goes to the namespace init and comes back whole") {
    placement_plan plan{{{placement::action::copy_file, "/a/b", "/cache/x", 0600, 1, 2, 42},
                         {placement::action::make_dir, "/a", "", 0755, 0, 0, 0}},
                        "/run/rfork/work/job/stage"};
    auto back = decode_plan(encode_plan(plan));
    REQUIRE(back);
    CHECK(back->stage == plan.stage);
    REQUIRE(back->steps.size() == 2);
    CHECK(back->steps[0].what == placement::action::copy_file);
    CHECK(back->steps[0].path == "/a/b");
    CHECK(back->steps[0].source == "/cache/x");
    CHECK(back->steps[0].mtime_ns == 42);
    CHECK(back->steps[1].what == placement::action::make_dir);
    auto bytes = encode_plan(plan);
    bytes.pop_back();
    CHECK_FALSE(decode_plan(bytes));
    placement_plan odd{{{placement::action::bind_file, "/a/../etc/shadow", "/cache/x", 0, 0, 0, 0}}, "/s"};
    CHECK_FALSE(decode_plan(encode_plan(odd)));
}

TEST_CASE("file placement: the decision takes this host's own file and asks for what it lacks") {
    rfork_test::require_root("the file cache");
    temp_tree t;
    file_cache cache((t.path / "cache").string(), 1 << 20);
    file_identity_cache ids;
    write_file(t.path / "same", "same content");
    write_file(t.path / "other", "another version");
    proto::file_manifest m;
    m.files.push_back(regular((t.path / "same").string(), "same content"));
    m.files.push_back(regular((t.path / "other").string(), "the parent's version"));
    m.files.push_back(regular((t.path / "missing/lib.so").string(), "a library"));
    proto::file_description dir;
    dir.path = (t.path / "missing/dir").string();
    dir.kind = proto::file_kind::directory;
    dir.mode = 0750;
    m.files.push_back(dir);
    auto d = decide_files(m, cache, ids, file_limits{1 << 20});
    REQUIRE_FALSE(d.refusal);
    CHECK(d.host_own == 1);
    CHECK(d.wanted == std::vector<std::uint32_t>{1, 2});
    CHECK(d.wanted_bytes == std::string("the parent's version").size() + std::string("a library").size());
    CHECK(d.missing_dirs == std::vector<std::uint32_t>{3});

    SUBCASE("a file of another mode is another version") {
        ::chmod((t.path / "same").c_str(), 0600);
        auto again = decide_files(m, cache, ids, file_limits{1 << 20});
        CHECK(again.wanted == std::vector<std::uint32_t>{0, 1, 2});
    }
    SUBCASE("once cached it is not asked for again") {
        file_cache::incoming in(cache, key_of(m.files[2]), m.files[2].size, 0);
        std::string content = "a library";
        CHECK(in.write(reinterpret_cast<const unsigned char*>(content.data()), content.size()).empty());
        CHECK(in.finish().empty());
        auto again = decide_files(m, cache, ids, file_limits{1 << 20});
        CHECK(again.wanted == std::vector<std::uint32_t>{1});
        CHECK(again.cached == std::vector<std::uint32_t>{2});
    }
    SUBCASE("a file over the size limit is refused by name") {
        auto again = decide_files(m, cache, ids, file_limits{15});
        REQUIRE(again.refusal);
        CHECK(again.refusal->find((t.path / "other").string()) != std::string::npos);
        CHECK(again.refusal->find("--max-file-size 15") != std::string::npos);
    }
    SUBCASE("a device this host lacks cannot travel") {
        proto::file_description dev;
        dev.path = (t.path / "missing/tty").string();
        dev.kind = proto::file_kind::char_device;
        dev.rdev = makedev(4, 1);
        m.files.push_back(dev);
        auto again = decide_files(m, cache, ids, file_limits{1 << 20});
        REQUIRE(again.refusal);
        CHECK(again.refusal->find("character device") != std::string::npos);
    }
    SUBCASE("a set-id file does not travel") {
        m.files[2].mode = 04755;
        auto again = decide_files(m, cache, ids, file_limits{1 << 20});
        REQUIRE(again.refusal);
        CHECK(again.refusal->find("set-user-ID") != std::string::npos);
    }
}

TEST_CASE("file placement: a file arrives whole with its hash or leaves nothing") {
    rfork_test::require_root("the file cache");
    temp_tree t;
    auto dir = (t.path / "cache").string();
    file_cache cache(dir, 1 << 20);
    std::string content = "the parent's bytes";
    auto key = cache_key{digest_of(content), 0755, 0, 0};
    {
        file_cache::incoming in(cache, key, content.size(), 0);
        auto wrong = std::string("the parent's BYTES");
        CHECK(in.write(reinterpret_cast<const unsigned char*>(wrong.data()), wrong.size()).empty());
        CHECK(in.finish().find("SHA-256") != std::string::npos);
    }
    {
        file_cache::incoming in(cache, key, content.size(), 0);
        CHECK(in.write(reinterpret_cast<const unsigned char*>(content.data()), 5).empty());
        CHECK(in.finish().find("short") != std::string::npos);
        CHECK_FALSE(in.write(reinterpret_cast<const unsigned char*>(content.data()), content.size()).empty());
    }
    CHECK(fs::is_empty(dir));
    CHECK_FALSE(cache.has(key));
    file_cache::incoming in(cache, key, content.size(), 0);
    CHECK(in.write(reinterpret_cast<const unsigned char*>(content.data()), content.size()).empty());
    CHECK(in.finish().empty());
    CHECK(cache.has(key));
    struct stat st {};
    REQUIRE(::stat(cache.path_of(key).c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);
    CHECK(read_text(cache.path_of(key)) == content);
}

TEST_CASE("file placement: the least recently used entries go once the cache is full") {
    rfork_test::require_root("the file cache");
    temp_tree t;
    file_cache cache((t.path / "cache").string(), 20);
    auto store = [&](const std::string& content) {
        auto key = cache_key{digest_of(content), 0644, 0, 0};
        file_cache::incoming in(cache, key, content.size(), 0);
        CHECK(in.write(reinterpret_cast<const unsigned char*>(content.data()), content.size()).empty());
        CHECK(in.finish().empty());
        cache.pin(key);
        cache.unpin(key);  // evicts what is over
        return key;
    };
    auto a = store("aaaaaaaa"), b = store("bbbbbbbb");
    CHECK(cache.has(a));  // a is now the most recently used
    auto c = store("cccccccc");
    CHECK(cache.has(a));
    CHECK_FALSE(cache.has(b));
    CHECK(cache.has(c));
    CHECK(cache.size() == 16);
    cache.pin(a);
    store("dddddddd");
    CHECK(cache.has(a));  // pinned: in use by a restore
    // An earlier run's entries are found again.
    file_cache reopened((t.path / "cache").string(), 100);
    CHECK(reopened.has(a));
    CHECK(reopened.size() == cache.size());
}

TEST_CASE("file placement: the child sees the parent's files and the host keeps its own") {
    rfork_test::require_root("a mount namespace");
    temp_tree t;
    fs::create_directories(t.path / "stage");
    write_file(t.path / "cache/lib", "the parent's library", 0755);
    write_file(t.path / "cache/data", "data the child writes", 0644);
    write_file(t.path / "host/lib.so", "the host's library");
    write_file(t.path / "host/neighbour", "another file of the host");
    auto at = [&](const char* rest) { return (t.path / rest).string(); };
    placement_plan plan{{{placement::action::bind_file, at("host/lib.so"), at("cache/lib"), 0, 0, 0, 0},
                         {placement::action::bind_file, at("missing/deep/prog"), at("cache/lib"), 0, 0, 0, 0},
                         {placement::action::copy_file, at("missing/data"), at("cache/data"), 0640, 0, 0, 0},
                         {placement::action::make_dir, at("missing/cwd"), "", 0710, 0, 0, 0}},
                        at("stage")};
    std::sort(plan.steps.begin(), plan.steps.end(), [](auto& a, auto& b) { return a.path < b.path; });
    auto seen = in_own_namespace(plan, [&] {
        std::string out;
        out += read_text(at("host/lib.so")) + "|";
        out += read_text(at("host/neighbour")) + "|";
        out += read_text(at("missing/deep/prog")) + "|";
        int fd = ::open(at("host/lib.so").c_str(), O_WRONLY);
        out += fd < 0 && errno == EROFS ? "read-only|" : "writable|";
        if (fd >= 0) ::close(fd);
        std::ofstream(at("missing/data"), std::ios::app) << " and more";
        out += read_text(at("missing/data")) + "|";
        struct stat st {};
        out += ::stat(at("missing/cwd").c_str(), &st) == 0 && S_ISDIR(st.st_mode)
                   ? fmt::format("{:o}|", st.st_mode & 07777)
                   : "no dir|";
        struct statvfs v {};
        out += ::statvfs(at("host").c_str(), &v) == 0 && (v.f_flag & ST_NOSUID) ? "nosuid" : "suid";
        return out;
    });
    CHECK(seen == "placed: the parent's library|another file of the host|the parent's library|read-only|"
                  "data the child writes and more|710|nosuid");
    // The host's own files are as they were; nothing appeared.
    CHECK(read_text(t.path / "host/lib.so") == "the host's library");
    CHECK_FALSE(fs::exists(t.path / "missing"));
    CHECK(read_text(t.path / "cache/data") == "data the child writes");
}

TEST_CASE("file placement: a path this host lacks from its root up gets a root of the child's own") {
    rfork_test::require_root("a mount namespace");
    temp_tree t;
    fs::create_directories(t.path / "stage");
    write_file(t.path / "cache/prog", "the parent's program", 0755);
    auto top = fmt::format("/rfork-placement-test-{}", ::getpid());
    REQUIRE_FALSE(fs::exists(top));
    placement_plan plan{{{placement::action::bind_file, top + "/build/prog", (t.path / "cache/prog").string(), 0, 0,
                          0, 0}},
                        (t.path / "stage").string()};
    auto seen = in_own_namespace(plan, [&] {
        std::string out = read_text(top + "/build/prog") + "|";
        // Everything else of the host is still there, its mounts too.
        out += fs::exists("/etc/os-release") ? "etc|" : "no etc|";
        out += fs::exists(t.path / "cache/prog") ? "tmp|" : "no tmp|";
        struct statvfs v {};
        out += ::statvfs("/proc", &v) == 0 ? "proc" : "no proc";
        return out;
    });
    CHECK(seen == "placed: the parent's program|etc|tmp|proc");
    CHECK_FALSE(fs::exists(top));
}

TEST_CASE("file placement: a directory step never changes a directory of the host seen through links") {
    // The links on the host make the second step land on the root of the
    // tmpfs that stands in for a private directory: it keeps that
    // directory's mode and owner, whatever the step says.
    rfork_test::require_root("a mount namespace");
    temp_tree t;
    fs::create_directories(t.path / "stage");
    write_file(t.path / "cache/f", "f");
    fs::create_directories(t.path / "private");
    ::chmod((t.path / "private").c_str(), 0700);
    write_file(t.path / "private/secret", "s", 0644);
    fs::create_directory_symlink(t.path / "private", t.path / "m");
    fs::create_directory_symlink("m/newdir/..", t.path / "z");
    placement_plan plan{{{placement::action::bind_file, (t.path / "m/newdir/f").string(), (t.path / "cache/f").string(),
                          0, 0, 0, 0},
                         {placement::action::make_dir, (t.path / "z").string(), "", 0755, 65534, 65534, 0}},
                        (t.path / "stage").string()};
    // The child's view of the private directory: its mode, owner and the file placed in it.
    auto private_view = [&] {
        struct stat st {};
        if (::stat((t.path / "private").c_str(), &st) != 0) return std::string("gone");
        return fmt::format("{:o} {}|", st.st_mode & 07777, st.st_uid) + read_text(t.path / "private/newdir/f");
    };
    auto seen = in_own_namespace(plan, private_view);
    CHECK(seen.starts_with("failed: "));
    CHECK(seen.find("back up") != std::string::npos);
    // And where the links lead to an existing directory, the step leaves it be.
    fs::remove(t.path / "z");
    fs::create_directory_symlink("m", t.path / "z");
    seen = in_own_namespace(plan, private_view);
    CHECK(seen == "placed: 700 0|f");
    struct stat host {};
    REQUIRE(::stat((t.path / "private").c_str(), &host) == 0);
    CHECK((host.st_mode & 07777) == 0700);
    CHECK_FALSE(fs::exists(t.path / "private/newdir"));
}

TEST_CASE("file placement: nothing is placed where the loader or CRIU look and a user's link leads only into that user's own") {
    rfork_test::require_root("a mount namespace");
    temp_tree t;
    fs::create_directories(t.path / "stage");
    write_file(t.path / "cache/x", "x");
    auto step = [&](const std::string& path) {
        return placement_plan{{{placement::action::bind_file, path, (t.path / "cache/x").string(), 0, 0, 0, 0}},
                              (t.path / "stage").string()};
    };
    for (std::string reserved : {"/etc/ld.so.preload", "/etc/criu/default.conf", "/usr/lib/criu/plugin.so"}) {
        CAPTURE(reserved);
        auto seen = in_own_namespace(step(reserved), [] { return std::string(); });
        CHECK(seen.starts_with("failed: "));
        CHECK(seen.find("the loader or CRIU") != std::string::npos);
    }
    // A user's link into a directory of root's: refused. Into the user's own: followed.
    fs::create_directories(t.path / "root-dir");
    fs::create_directories(t.path / "users-dir");
    REQUIRE(::chown((t.path / "users-dir").c_str(), 65534, 65534) == 0);
    fs::create_directory_symlink(t.path / "root-dir", t.path / "to-root");
    fs::create_directory_symlink(t.path / "users-dir", t.path / "to-own");
    REQUIRE(::lchown((t.path / "to-root").c_str(), 65534, 65534) == 0);
    REQUIRE(::lchown((t.path / "to-own").c_str(), 65534, 65534) == 0);
    auto refused = in_own_namespace(step((t.path / "to-root/lib.so").string()), [] { return std::string(); });
    CHECK(refused.starts_with("failed: "));
    CHECK(refused.find("a link of uid 65534") != std::string::npos);
    auto followed = in_own_namespace(step((t.path / "to-own/lib.so").string()),
                                     [&] { return read_text(t.path / "users-dir/lib.so"); });
    CHECK(followed == "placed: x");
    CHECK_FALSE(fs::exists(t.path / "root-dir/lib.so"));
    CHECK_FALSE(fs::exists(t.path / "users-dir/lib.so"));
}

TEST_CASE("file placement: nothing is placed under /proc") {
    rfork_test::require_root("a mount namespace");
    temp_tree t;
    fs::create_directories(t.path / "stage");
    write_file(t.path / "cache/x", "x");
    write_file(t.path / "host/link-dir/keep", "k");
    fs::create_directory_symlink("/proc/sys", t.path / "host/into-proc");
    placement_plan plan{{{placement::action::bind_file, (t.path / "host/into-proc/kernel/x").string(),
                          (t.path / "cache/x").string(), 0, 0, 0, 0}},
                        (t.path / "stage").string()};
    auto seen = in_own_namespace(plan, [] { return std::string(); });
    CHECK(seen.starts_with("failed: "));
    CHECK(seen.find("/proc") != std::string::npos);
}

}
