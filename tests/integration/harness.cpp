#include "harness.hpp"

#include "event_wait.hpp"

#include <doctest/doctest.h>

#include <rfork/protocol.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace fs = std::filesystem;

namespace rfork::test {

namespace {

const std::string source_dir = RFORK_SOURCE_DIR;
const std::string hosts_script = source_dir + "/scripts/hosts";

[[noreturn]] void fail_setup(const std::string& what) { throw std::runtime_error(what); }

bool executable(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// `name` as the shell finds it on PATH (root's PATH has the sbin
// directories), or "" if it is on none of them.
std::string on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for (std::string dir; std::getline(dirs, dir, ':');)
        if (!dir.empty() && executable(dir + "/" + name)) return dir + "/" + name;
    return {};
}

// ip(8), found once.
const std::string& ip_command() {
    static const std::string found = on_path("ip");
    return found;
}

// ---- a raw peer inside TLS (see raw_peer.cpp for the same in plain TCP) ----

// What raw_peer MODE sends, and whether it then ends its side of the stream.
struct raw_request {
    rfork::detail::bytes bytes;
    bool end_sending = true;
    // Sent every 200 ms until the agent answers: one byte of the image at a time.
    rfork::detail::bytes trickle;
};

// SHA-256 of some bytes (OpenSSL), as a sending agent announces a file's.
std::array<unsigned char, 32> sha256_of_bytes(const rfork::detail::bytes& data) {
    std::array<unsigned char, 32> digest{};
    unsigned int n = 0;
    if (::EVP_Digest(data.data(), data.size(), digest.data(), &n, ::EVP_sha256(), nullptr) != 1 || n != 32)
        fail_setup("EVP_Digest failed");
    return digest;
}

raw_request raw_request_of(const std::string& mode) {
    namespace protocol = rfork::protocol;
    raw_request r;
    auto append = [&r](const auto& more) { r.bytes.insert(r.bytes.end(), more.begin(), more.end()); };
    if (mode == "garbage") {
        append(std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    } else if (mode == "version") {
        append(protocol::encode_handshake(protocol::role::sender, 99));
    } else if (mode == "role") {
        append(protocol::encode_handshake(protocol::role::program));
    } else if (mode == "truncated") {
        append(protocol::encode_handshake(protocol::role::sender));
        auto frame = protocol::encode(protocol::image_begin{"raw", 1234, 5678, {}});
        frame.resize(frame.size() - 3);  // the stream ends inside a frame
        append(frame);
    } else if (mode == "stall") {
        append(protocol::encode_handshake(protocol::role::sender));
        append(protocol::encode(protocol::image_begin{"raw", 1234, 5678, {}, 4096}));
        append(protocol::encode(protocol::file_manifest{}));  // it uses no files
        append(protocol::encode(protocol::image_file{"pages-1.img", 4096}));
        r.end_sending = false;
    } else if (mode.starts_with("origin=")) {
        // The start of an image from the origin named; then the stream ends.
        append(protocol::encode_handshake(protocol::role::sender));
        append(protocol::encode(protocol::image_begin{mode.substr(7), 1234, 5678, {}, 4096}));
        append(protocol::encode(protocol::file_manifest{}));
    } else if (mode == "big_file") {
        append(protocol::encode_handshake(protocol::role::sender));
        append(protocol::encode(protocol::image_begin{"raw", 1234, 5678, {}, 1 << 30}));
        append(protocol::encode(protocol::file_manifest{}));  // it uses no files
        append(protocol::encode(protocol::image_file{"mm-1.img", (64 << 20) + 1}));
    } else if (mode == "trickle") {
        append(protocol::encode_handshake(protocol::role::sender));
        append(protocol::encode(protocol::image_begin{"raw", 1234, 5678, {}, 1 << 20}));
        append(protocol::encode(protocol::file_manifest{}));  // it uses no files
        append(protocol::encode(protocol::image_file{"pages-1.img", 1 << 20}));
        unsigned char byte = 0;
        r.trickle = protocol::encode_frame(protocol::message_type::image_data, std::span(&byte, 1));
        r.end_sending = false;
    } else if (mode.starts_with("files_")) {
        // An image of no files of its own whose manifest names one file
        // this host lacks, hostile in the way the mode says; its bytes follow.
        protocol::file_description f;
        f.path = "/rfork-hostile/file";
        f.mode = 0755;
        std::string content = "the bytes of a file";
        f.size = content.size();
        append(protocol::encode_handshake(protocol::role::sender));
        append(protocol::encode(protocol::image_begin{"raw", 1234, 5678, {}, 0}));
        if (mode == "files_dotdot") {
            // A path through "..": no manifest may hold it (encoded by hand, as no agent would).
            f.path = "/rfork-hostile/../etc/passwd";
        } else if (mode == "files_huge") {
            f.size = 1ull << 60;
        } else if (mode == "files_bad_hash") {
            f.sha256.fill(0x5a);  // not these bytes' hash
        } else if (mode == "files_overrun") {
            content += " and then some";  // more bytes than announced
        } else {
            fail_setup("raw_tls_peer: unknown mode " + mode);
        }
        if (mode != "files_bad_hash") {
            rfork::detail::bytes data(content.begin(), content.end());
            f.sha256 = {};
            auto digest = sha256_of_bytes(data);
            std::copy(digest.begin(), digest.end(), f.sha256.begin());
        }
        rfork::detail::bytes payload;
        rfork::detail::wire_writer w(payload);
        w.u32(1);
        f.encode(w);
        append(protocol::encode_frame(protocol::message_type::file_manifest, payload));
        append(protocol::encode(protocol::image_end{}));
        append(protocol::encode_frame(protocol::message_type::file_data,
                                      std::span(reinterpret_cast<const unsigned char*>(content.data()), content.size())));
        append(protocol::encode(protocol::files_end{}));
    } else if (mode == "silent") {
        r.end_sending = false;
    } else {
        fail_setup("raw_tls_peer: unknown mode " + mode);
    }
    return r;
}

// The agent's answer as raw_peer prints it.
std::string describe_answer(const rfork::detail::bytes& answer) {
    namespace protocol = rfork::protocol;
    std::string out;
    protocol::stream_decoder decoder(true);
    decoder.feed(answer);
    for (;;) {
        auto result = decoder.next();
        if (result == protocol::stream_decoder::result::handshake) {
            out += "handshake version=" + std::to_string(decoder.peer().version) +
                   " role=" + std::to_string(unsigned(decoder.peer().who)) + "\n";
        } else if (result == protocol::stream_decoder::result::frame) {
            auto& frame = decoder.last_frame();
            protocol::error_message e;
            if (frame.type != protocol::message_type::error) {
                out += "frame type=" + std::to_string(unsigned(frame.type)) + "\n";
            } else if (protocol::decode(frame.payload, e)) {
                out += "malformed error\n";
            } else {
                out += "error code=" + std::to_string(e.code.value()) + " message=" + e.text + "\n";
            }
        } else {
            break;
        }
    }
    if (auto bad = decoder.finish()) out += "answer undecodable: " + bad.message() + "\n";
    return out + "closed\n";
}


int secret_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// The agents' PSK, as agent/peer/tls.cpp offers it.
unsigned offer_psk(SSL* ssl, const char*, char* identity, unsigned max_identity, unsigned char* psk,
                   unsigned max_psk) {
    auto* secret = static_cast<const std::vector<unsigned char>*>(SSL_get_ex_data(ssl, secret_index()));
    const std::string name = "rfork-agent";
    if (!secret || name.size() + 1 > max_identity || secret->size() > max_psk) return 0;
    std::memcpy(identity, name.c_str(), name.size() + 1);
    std::memcpy(psk, secret->data(), secret->size());
    return static_cast<unsigned>(secret->size());
}

std::string openssl_error(SSL* ssl, int ret) {
    int error = SSL_get_error(ssl, ret);
    if (error == SSL_ERROR_SYSCALL) return errno ? std::strerror(errno) : "connection closed";
    char text[256] = "";
    ERR_error_string_n(ERR_get_error(), text, sizeof text);
    return "SSL error " + std::to_string(error) + ": " + text;
}

using ctx_ptr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

// TLS 1.3 as the agents speak it: with their PSK (see offer_psk), or with a
// certificate and its key, checking the agent's against `ca`.
ctx_ptr tls_client(bool psk) {
    ctx_ptr ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    if (psk) SSL_CTX_set_ciphersuites(ctx.get(), "TLS_AES_128_GCM_SHA256");
    return ctx;
}

ctx_ptr certificate_client(const std::string& cert, const std::string& key, const std::string& ca) {
    auto ctx = tls_client(false);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1)
        fail_setup("raw_tls_peer: cannot load " + cert + ", " + key + " and " + ca);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    return ctx;
}

// Sends `request` inside TLS (blocking, each step bounded by `deadline`) and
// reads the answer until the agent closes. `secret`: the PSK, for a context of tls_client(true).
run_result tls_exchange(int fd, SSL_CTX* ctx, const std::vector<unsigned char>* secret, const raw_request& request,
                        std::chrono::steady_clock::time_point deadline) {
    run_result result;
    auto bound_io = [&] {
        auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        timeval tv{static_cast<time_t>(left.count() / 1000000), static_cast<suseconds_t>(left.count() % 1000000)};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        return true;
    };
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx), SSL_free);
    if (secret) {
        SSL_set_ex_data(ssl.get(), secret_index(), const_cast<std::vector<unsigned char>*>(secret));
        SSL_set_psk_client_callback(ssl.get(), offer_psk);
    }
    SSL_set_fd(ssl.get(), fd);
    int ret = bound_io() ? SSL_connect(ssl.get()) : -1;
    if (ret != 1) {
        result.status = 0;
        result.out = "tls failed: " + openssl_error(ssl.get(), ret) + "\n";
        return result;
    }
    if (!request.bytes.empty() && bound_io())
        SSL_write(ssl.get(), request.bytes.data(), static_cast<int>(request.bytes.size()));
    rfork::detail::bytes answer;
    // Far more often than any idle timeout, until the agent says more than its
    // handshake and its (empty) request for files.
    auto expected = rfork::protocol::encode_handshake(rfork::protocol::role::agent).size() +
                    rfork::protocol::encode(rfork::protocol::file_request{}).size();
    while (!request.trickle.empty() && answer.size() <= expected) {
        pollfd readable{fd, POLLIN, 0};
        if (SSL_pending(ssl.get()) > 0 || ::poll(&readable, 1, 200) != 0) {
            unsigned char buffer[4096];
            int n = bound_io() ? SSL_read(ssl.get(), buffer, sizeof buffer) : -1;
            if (n <= 0) break;
            answer.insert(answer.end(), buffer, buffer + n);
            continue;
        }
        if (!bound_io() || SSL_write(ssl.get(), request.trickle.data(), static_cast<int>(request.trickle.size())) <= 0)
            break;
    }
    // close_notify: the agent reads an end of stream, as after raw_peer's shutdown.
    if (request.end_sending && bound_io()) SSL_shutdown(ssl.get());
    for (;;) {
        unsigned char buffer[4096];
        int n = bound_io() ? SSL_read(ssl.get(), buffer, sizeof buffer) : -1;
        if (n <= 0) break;
        answer.insert(answer.end(), buffer, buffer + n);
    }
    if (std::chrono::steady_clock::now() >= deadline) return result;  // status -1: the agent never closed
    result.status = 0;
    result.out = describe_answer(answer);
    return result;
}

}  // namespace

std::vector<unsigned char> read_secret_bytes(const std::string& path) {
    auto text = read_file(path);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (text.size() < 64 || text.size() % 2) fail_setup("not a secret file: " + path);
    std::vector<unsigned char> secret;
    for (std::size_t i = 0; i < text.size(); i += 2)
        secret.push_back(static_cast<unsigned char>(std::stoi(text.substr(i, 2), nullptr, 16)));
    return secret;
}

namespace {

// Exit code 77 (CTest: skipped) for what this machine lacks; a failure under CI=true.
void skip_or_fail(const std::string& missing) {
    const char* ci = std::getenv("CI");
    if (ci && std::string(ci) == "true") FAIL("cannot run the integration tests under CI: " << missing);
    std::printf("SKIPPED: %s\n", missing.c_str());
    std::fflush(stdout);
    std::_Exit(77);
}

}  // namespace

void require_fork_environment() {
    std::string missing;
    if (::geteuid() != 0) missing = "not root (CRIU and network namespaces need root)";
    else if (ip_command().empty())
        missing = "no ip(8) on PATH (install iproute2, or run scripts/setup)";
    else if (!executable(RFORK_AGENT_CRIU) && std::system("command -v criu >/dev/null 2>&1") != 0)
        missing = "no CRIU (run scripts/setup)";
    if (!missing.empty()) skip_or_fail(missing);
}

fs::path installed_agent_root() {
    const char* root = std::getenv("RFORK_TEST_AGENT_ROOT");
    if (!root || !*root)
        skip_or_fail("no installed agent's root: RFORK_TEST_AGENT_ROOT is unset (ctest sets it, "
                     "after its fixture own_files.agent_root made it)");
    else if (!executable(std::string(root) + "/usr/bin/rfork-agent"))
        skip_or_fail(std::string("RFORK_TEST_AGENT_ROOT=") + root + " has no /usr/bin/rfork-agent installed");
    return root;
}

// ---- running_program -------------------------------------------------------

running_program::running_program(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                                 bool terminal, int stdin_fd) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) fail_setup("pipe2 failed");
    int master = -1;
    std::string slave_name;
    if (terminal) {
        master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) fail_setup("posix_openpt failed");
        slave_name = ::ptsname(master);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
        if (terminal) {
            ::setsid();
            int slave = ::open(slave_name.c_str(), O_RDWR);  // the first tty a session leader opens is its terminal
            ::ioctl(slave, TIOCSCTTY, 0);
            for (int fd = 0; fd < 3; ++fd) ::dup2(slave, fd);
        } else {
            // A session of its own, as a daemon or a job of a shell on the
            // host would have: where the tests run, the session's leader may
            // be in an outer pid namespace, which CRIU cannot checkpoint.
            ::setsid();
            ::dup2(out[1], 1);
            ::dup2(err[1], 2);
            ::dup2(stdin_fd >= 0 ? stdin_fd : ::open("/dev/null", O_RDONLY), 0);
        }
        // Nothing else of ours (CTest leaks its log to tests) may reach a program CRIU dumps.
        ::close_range(3, ~0u, 0);
        for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    if (terminal) {
        ::close(out[0]);
        out_ = master;  // reads EIO once every holder of the terminal has closed it: the end
    } else {
        out_ = out[0];
    }
    err_ = err[0];
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
}

running_program::running_program(running_program&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), pidfd_(std::exchange(o.pidfd_, -1)), out_(std::exchange(o.out_, -1)),
      err_(std::exchange(o.err_, -1)) {}

running_program::~running_program() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    for (int fd : {pidfd_, out_, err_})
        if (fd >= 0) ::close(fd);
}

void running_program::kill_now() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

run_result running_program::finish(std::chrono::milliseconds bound) {
    run_result result;
    auto deadline = std::chrono::steady_clock::now() + bound;
    bool exited = false;
    // Read both pipes to their end and wait for the exit, all bounded by one deadline.
    while (out_ >= 0 || err_ >= 0 || !exited) {
        pollfd fds[3] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}, {exited ? -1 : pidfd_, POLLIN, 0}};
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || ::poll(fds, 3, static_cast<int>(left.count())) == 0) break;
        for (int i = 0; i < 2; ++i) {
            int& fd = i == 0 ? out_ : err_;
            if (fd < 0 || !fds[i].revents) continue;
            char buffer[65536];
            auto n = ::read(fd, buffer, sizeof buffer);
            if (n <= 0) {
                ::close(fd);
                fd = -1;
            } else {
                (i == 0 ? result.out : result.err).append(buffer, static_cast<std::size_t>(n));
            }
        }
        if (fds[2].revents) exited = true;
    }
    int status = 0;
    if (!exited) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        result.status = -1;
    } else {
        ::waitpid(pid_, &status, 0);
        result.status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }
    pid_ = -1;
    return result;
}

// ---- test_hosts ------------------------------------------------------------

test_hosts::test_hosts(std::vector<std::string> names, const setup& how) : names_(std::move(names)) {
    std::map<std::string, std::string> env{{"RFORK_HOSTS_ALLOW_ROOT", how.allow_root ? "1" : "0"},
                                           {"RFORK_HOSTS_CERTIFICATES", how.certificates ? "1" : "0"},
                                           {"RFORK_HOSTS_NO_CREDENTIALS", how.no_credentials ? "1" : "0"}};
    // Before the state dir exists: a skip or a mistake here leaves nothing.
    if (!how.own_files.empty()) {
        auto base = installed_agent_root().string();
        for (auto& host : how.own_files) {
            if (std::find(names_.begin(), names_.end(), host) == names_.end())
                fail_setup("own_files names " + host + ", which is not one of the hosts");
            env["RFORK_HOSTS_OVERLAY_" + host] = base;
        }
    }
    for (auto& args : how.agent_args) {
        auto eq = args.find('=');
        bool per_host = eq != std::string::npos && eq < args.find(' ');
        env[per_host ? "RFORK_AGENT_ARGS_" + args.substr(0, eq) : "RFORK_AGENT_ARGS"] =
            per_host ? args.substr(eq + 1) : args;
    }
    char templ[] = "/tmp/rfork-test-XXXXXX";
    if (!::mkdtemp(templ)) fail_setup("mkdtemp failed");
    state_ = templ;
    std::vector<std::string> argv{hosts_script, "up", state_, RFORK_AGENT_BINARY};
    argv.insert(argv.end(), names_.begin(), names_.end());
    auto up = running_program(argv, env).finish(60s);
    if (up.status != 0) {
        running_program({hosts_script, "down", state_}).finish(60s);
        fail_setup("scripts/hosts up failed (" + std::to_string(up.status) + "): " + up.err);
    }
}

test_hosts::~test_hosts() {
    auto down = running_program({hosts_script, "down", state_}).finish(60s);
    if (down.status != 0) std::fprintf(stderr, "scripts/hosts down failed: %s\n", down.err.c_str());
}

running_program test_hosts::start(const std::string& host, const std::vector<std::string>& argv,
                                  const std::map<std::string, std::string>& env, bool terminal, int stdin_fd) const {
    std::vector<std::string> full{hosts_script, "exec", state_, host, "--"};
    full.insert(full.end(), argv.begin(), argv.end());
    // From a terminal, as from an interactive shell: the shell leads the
    // session and the program is its child, not the session leader.
    if (terminal) full.insert(full.begin(), {"/bin/sh", "-c", "\"$@\"; exit $?", "sh"});
    return running_program(full, env, terminal, stdin_fd);
}

run_result test_hosts::run(const std::string& host, const std::vector<std::string>& argv,
                           const std::map<std::string, std::string>& env, std::chrono::milliseconds bound) const {
    return start(host, argv, env).finish(bound);
}

fs::path test_hosts::root_of(const std::string& host) const {
    auto file = state_ + "/" + host + ".root";
    if (!fs::exists(file)) return {};
    auto text = read_file(file);
    return text.substr(0, text.find('\n'));
}

std::string test_hosts::agent_program(const std::string& host) const {
    return root_of(host).empty() ? RFORK_AGENT_BINARY : "/usr/bin/rfork-agent";
}

std::string test_hosts::address(const std::string& host) const {
    auto text = read_file(state_ + "/" + host + ".addr");
    return text.substr(0, text.find_first_of("\n/"));
}

int test_hosts::agent_pid(const std::string& host) const { return std::stoi(read_file(state_ + "/" + host + ".pid")); }

std::string test_hosts::agent_stdout(const std::string& host) const { return read_file(state_ + "/" + host + ".out"); }
std::string test_hosts::agent_log(const std::string& host) const { return read_file(state_ + "/" + host + ".err"); }

std::vector<agent_event> test_hosts::events(const std::string& host, const std::string& name) const {
    auto all = parse_events(read_file(state_ + "/" + host + ".events"));
    if (name.empty()) return all;
    std::vector<agent_event> named;
    for (auto& e : all)
        if (e.name == name) named.push_back(std::move(e));
    return named;
}

bool test_hosts::wait_for_events(const std::string& host, const std::string& name, std::size_t count,
                                 std::chrono::milliseconds bound) const {
    return wait_for_events(
        host, [&](const std::vector<agent_event>&) { return events(host, name).size() >= count; }, bound);
}

bool test_hosts::wait_for_events(const std::string& host,
                                 const std::function<bool(const std::vector<agent_event>&)>& done,
                                 std::chrono::milliseconds bound) const {
    return wait_for_file(
        state_ + "/" + host + ".events", [&](const std::string& text) { return done(parse_events(text)); }, bound);
}

std::vector<std::string> test_hosts::work_dir_entries(const std::string& host) const {
    std::vector<std::string> entries;
    // /proc/PID/root sees the host's own mount namespace, where /run/rfork is its tmpfs.
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc/" + std::to_string(agent_pid(host)) + "/root/run/rfork/work", ec))
        entries.push_back(e.path().filename().string());
    if (ec) entries.push_back("<cannot list the work dir: " + ec.message() + ">");
    return entries;
}

void test_hosts::set_link(const std::string& host, bool up) const {
    auto ns = read_file(state_ + "/" + host + ".ns");
    ns = ns.substr(0, ns.find('\n'));
    auto r = running_program({ip_command(), "-n", ns, "link", "set", "eth0", up ? "up" : "down"}).finish(10s);
    if (r.status != 0) fail_setup("ip link set failed: " + r.err);
}

std::size_t test_hosts::agent_fds(const std::string& host) const {
    auto list = run(host, {agent_program(host), "list"}, {}, 30s);
    if (list.status != 0) fail_setup("rfork-agent list failed on " + host + ": " + list.err);
    return fd_count(agent_pid(host));
}

std::vector<int> test_hosts::processes_besides_agent(const std::string& host) const {
    auto ns = read_file(state_ + "/" + host + ".ns");
    ns = ns.substr(0, ns.find('\n'));
    auto pids = running_program({ip_command(), "netns", "pids", ns}).finish(10s);
    // An empty answer must mean no process, never a failed look.
    if (pids.status != 0) fail_setup("ip netns pids " + ns + " failed: " + pids.err);
    std::vector<int> result;
    std::istringstream in(pids.out);
    for (int pid; in >> pid;)
        if (pid != agent_pid(host)) result.push_back(pid);
    return result;
}

void test_hosts::in_network(const std::string& host, const std::function<void()>& open) const {
    auto ns = read_file(state_ + "/" + host + ".ns");
    ns = ns.substr(0, ns.find('\n'));
    int here = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int there = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (here < 0 || there < 0 || ::setns(there, CLONE_NEWNET) != 0) {
        for (int fd : {here, there})
            if (fd >= 0) ::close(fd);
        fail_setup("cannot enter the network namespace of " + host + ": " + std::strerror(errno));
    }
    ::close(there);
    struct back_home {
        int here;
        ~back_home() {
            if (::setns(here, CLONE_NEWNET) != 0) std::abort();  // the test would go on in the wrong network
            ::close(here);
        }
    } back{here};
    open();
}

std::string test_hosts::secret_file() const {
    auto path = state_ + "/secret";
    return fs::exists(path) ? path : std::string{};
}

run_result test_hosts::raw_tls_peer(const std::string& from, const std::string& address, std::uint16_t port,
                                    const std::string& mode, std::string secret,
                                    std::chrono::milliseconds bound) const {
    if (secret.empty()) secret = secret_file();
    if (secret.empty()) fail_setup("raw_tls_peer: these hosts share no secret");
    auto bytes = read_secret_bytes(secret);
    return raw_tls_exchange(from, address, port, mode, tls_client(true).get(), &bytes, bound);
}

run_result test_hosts::raw_tls_peer_with_certificate(const std::string& from, const std::string& address,
                                                     std::uint16_t port, const std::string& mode,
                                                     const std::string& cert, const std::string& key,
                                                     const std::string& ca, std::chrono::milliseconds bound) const {
    return raw_tls_exchange(from, address, port, mode, certificate_client(cert, key, ca).get(), nullptr, bound);
}

run_result test_hosts::raw_tls_exchange(const std::string& from, const std::string& address, std::uint16_t port,
                                        const std::string& mode, SSL_CTX* ctx,
                                        const std::vector<unsigned char>* secret,
                                        std::chrono::milliseconds bound) const {
    auto request = raw_request_of(mode);
    auto deadline = std::chrono::steady_clock::now() + bound;
    int fd = -1;
    in_network(from, [&] { fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
    if (fd < 0) fail_setup("socket failed");
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_it{fd};
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    if (::inet_pton(AF_INET, address.c_str(), &to.sin_addr) != 1) fail_setup("raw_tls_peer: not an address: " + address);
    timeval tv{static_cast<time_t>(std::max<std::int64_t>(1, bound.count() / 1000)), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect() too
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0)
        return {0, "connect failed: " + std::string(std::strerror(errno)) + "\n", {}};
    return tls_exchange(fd, ctx, secret, request, deadline);
}

// ---- helpers ---------------------------------------------------------------

temp_dir::temp_dir(const std::string& name) {
    std::string pattern = "/tmp/rfork-" + name + "-XXXXXX";
    if (!::mkdtemp(pattern.data())) fail_setup("mkdtemp failed: " + std::string(std::strerror(errno)));
    path = pattern;
}

temp_dir::~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

bool wait_for_file(const std::string& path, const std::function<bool(const std::string&)>& done,
                   std::chrono::milliseconds bound) {
    return wait_for_event(path, IN_MODIFY | IN_CLOSE_WRITE, [&] { return done(read_file(path)); }, bound);
}

void check_nothing_left(const test_hosts& hosts, const std::vector<std::string>& names,
                        const std::map<std::string, std::size_t>& ended) {
    // Exactly as many children ended on each host as `ended` says (none where
    // it says nothing): a bounded wait for the last, then an exact count.
    auto all = names;
    for (auto& [host, count] : ended)
        if (std::find(all.begin(), all.end(), host) == all.end()) all.push_back(host);
    for (auto& host : all) {
        auto found = ended.find(host);
        std::size_t count = found == ended.end() ? 0 : found->second;
        CAPTURE(host);
        INFO(host << "'s agent log: " << hosts.agent_log(host));
        if (count > 0) CHECK(hosts.wait_for_events(host, "child_ended", count));
        CHECK(hosts.events(host, "child_ended").size() == count);
    }
    for (auto& host : names) {
        CAPTURE(host);
        CHECK(hosts.work_dir_entries(host) == std::vector<std::string>{});
        CHECK(hosts.processes_besides_agent(host) == std::vector<int>{});
        CHECK(child_cgroups(hosts, host) == std::vector<std::string>{});
    }
}

std::string cgroup_directory(const std::string& proc_cgroup, const std::string& controller) {
    bool v2 = fs::exists("/sys/fs/cgroup/cgroup.controllers");  // the unified hierarchy alone
    std::istringstream in(proc_cgroup);
    for (std::string line; std::getline(in, line);) {
        auto first = line.find(':'), second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos) continue;
        auto controllers = "," + line.substr(first + 1, second - first - 1) + ",";
        auto path = line.substr(second + 1);
        if (path == "/") path.clear();
        if (v2 && line.starts_with("0::")) return "/sys/fs/cgroup" + path;
        if (!v2 && controllers.find("," + controller + ",") != std::string::npos)
            return "/sys/fs/cgroup/" + controller + path;
    }
    return {};
}

std::vector<std::string> child_cgroups(const test_hosts& hosts, const std::string& host) {
    auto own = read_file("/proc/" + std::to_string(hosts.agent_pid(host)) + "/cgroup");
    std::vector<std::string> found;
    for (const char* controller : {"pids", "memory"}) {
        fs::path dir = cgroup_directory(own, controller);
        if (dir.filename() == "rfork-agent") dir = dir.parent_path();  // v2: the agent's leaf
        std::error_code ec;
        for (auto& entry : fs::directory_iterator(dir, ec))
            if (entry.path().filename().string().starts_with("rfork-child-")) found.push_back(entry.path().string());
    }
    std::sort(found.begin(), found.end());  // on v2 both controllers name one directory
    found.erase(std::unique(found.begin(), found.end()), found.end());
    return found;
}

namespace {

// One JSON string at `at` (at its opening quote), as the agent writes them.
std::optional<std::string> json_string(const std::string& line, std::size_t& at) {
    if (at >= line.size() || line[at] != '"') return std::nullopt;
    std::string out;
    for (++at; at < line.size(); ++at) {
        char c = line[at];
        if (c == '"') {
            ++at;
            return out;
        }
        if (c != '\\') {
            out += c;
            continue;
        }
        if (++at >= line.size()) return std::nullopt;
        char e = line[at];
        if (e == 'u' && at + 4 < line.size()) {
            out += static_cast<char>(std::stoi(line.substr(at + 1, 4), nullptr, 16));
            at += 4;
        } else if (e == 'n') {
            out += '\n';
        } else {
            out += e;
        }
    }
    return std::nullopt;
}

std::optional<agent_event> parse_event(const std::string& line) {
    std::map<std::string, std::string> fields;
    std::size_t at = 1;
    if (line.empty() || line.front() != '{' || line.back() != '}') return std::nullopt;
    while (at < line.size() - 1) {
        auto key = json_string(line, at);
        if (!key || at >= line.size() || line[at++] != ':') return std::nullopt;
        std::optional<std::string> value;
        if (line[at] == '"') {
            value = json_string(line, at);
        } else {
            auto end = line.find_first_of(",}", at);
            value = line.substr(at, end - at);
            at = end;
        }
        if (!value || at >= line.size()) return std::nullopt;
        fields[*key] = *value;
        if (line[at] == ',') ++at;
        else if (at != line.size() - 1) return std::nullopt;
    }
    auto name = fields.find("event");
    if (name == fields.end()) return std::nullopt;
    agent_event event{name->second, std::move(fields)};
    return event;
}

}  // namespace

std::vector<agent_event> parse_events(const std::string& text) {
    std::vector<agent_event> events;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        auto event = parse_event(line);
        INFO("event line: " << line);
        REQUIRE(event);
        events.push_back(std::move(*event));
    }
    return events;
}

bool any_event_with(const std::vector<agent_event>& events, const std::string& key, const std::string& needle) {
    return std::any_of(events.begin(), events.end(),
                       [&](const agent_event& e) { return e[key].find(needle) != std::string::npos; });
}

std::string agent_logs(const test_hosts& hosts, const std::vector<std::string>& names) {
    std::string text;
    for (auto& h : names) text += "\n--- " + h + "'s agent log:\n" + hosts.agent_log(h);
    return text;
}

std::size_t fd_count(int pid) {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
    return n;
}

std::string error_value(rfork::errc e) { return std::to_string(static_cast<int>(e)); }

std::string expect_failed_fork(const run_result& r, rfork::errc expected) {
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.status == 0);
    auto errors = lines_with(r.out, "error ");
    REQUIRE(errors.size() == 1);
    CHECK(field(errors[0], "category") == "rfork");
    CHECK(field(errors[0], "value") == error_value(expected));
    CHECK(lines_with(r.out, "parent goes on").size() == 1);
    return errors[0];
}

std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.find(needle) != std::string::npos) lines.push_back(line);
    return lines;
}

std::vector<std::string> lines_starting_with(const std::string& text, const std::string& prefix) {
    std::vector<std::string> lines;
    for (auto& line : lines_with(text, prefix))
        if (line.starts_with(prefix)) lines.push_back(line);
    return lines;
}

std::string only_line(const std::string& text, const std::string& prefix) {
    auto lines = lines_starting_with(text, prefix);
    INFO("lines starting with '" << prefix << "': " << lines.size());
    REQUIRE(lines.size() == 1);
    return lines[0];
}

std::string field(const std::string& line, const std::string& key) {
    std::istringstream in(line);
    for (std::string word; in >> word;)
        if (word.starts_with(key + "=")) return word.substr(key.size() + 1);
    return {};
}

std::string program_path(const std::string& name) {
    if (name == "silly") return RFORK_SILLY_BINARY;
    if (name == "rfork-agent") return RFORK_AGENT_BINARY;
    return std::string(RFORK_TEST_PROGRAM_DIR) + "/" + name;
}

}  // namespace rfork::test
