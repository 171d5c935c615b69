// Only agents that hold the same secret fork to each other: TLS 1.3 with that
// secret as a pre-shared key. Anyone else is refused before a byte of rfork's
// protocol is read, and nothing is restored. An agent without credentials is
// no exception: it listens on loopback only, with a secret of its host's own.
// And a sending agent sends nothing to a server that did not prove the secret.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/detail/frame_io.hpp>
#include <rfork/error.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

using namespace rfork::test;
namespace fs = std::filesystem;

namespace {

// A TLS 1.3 server with a certificate and no PSK, as a man in the middle or a
// spoofed name would answer, on 127.0.0.1 of a test host. It counts what
// reaches it: connections, handshakes completed, application bytes.
class certificate_server {
public:
    struct counts {
        int connections = 0, handshakes = 0, ended = 0;
        std::size_t bytes = 0;
        std::string failure;  // an exception of the server itself
    };

    certificate_server(const test_hosts& hosts, const std::string& host, const std::string& cert,
                       const std::string& key) {
        SSL_CTX_set_min_proto_version(tls_.native_handle(), TLS1_3_VERSION);
        tls_.use_certificate_chain_file(cert);
        tls_.use_private_key_file(key, asio::ssl::context::pem);
        hosts.in_network(host, [this] { acceptor_.open(asio::ip::tcp::v4()); });
        acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
        acceptor_.listen();
        asio::co_spawn(io_, accept_all(), [this](std::exception_ptr e) { note_failure(e); });
        thread_ = std::thread([this] { io_.run(); });
    }
    ~certificate_server() {
        io_.stop();
        thread_.join();
    }
    certificate_server(const certificate_server&) = delete;
    certificate_server& operator=(const certificate_server&) = delete;

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

    // Waits until `n` connections have ended; false when `bound` ran out.
    bool wait_ended(int n, std::chrono::milliseconds bound) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, bound, [&] { return counts_.ended >= n; });
    }
    counts now() {
        std::lock_guard lock(mutex_);
        return counts_;
    }

private:
    asio::awaitable<void> accept_all() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(rfork::detail::as_tuple_awaitable);
            if (ec) co_return;
            asio::co_spawn(io_, serve(std::move(socket)), [this](std::exception_ptr e) { note_failure(e); });
        }
    }

    asio::awaitable<void> serve(asio::ip::tcp::socket socket) {
        update([](counts& c) { ++c.connections; });
        asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), tls_);
        auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, rfork::detail::as_tuple_awaitable);
        if (!ec) {
            update([](counts& c) { ++c.handshakes; });
            for (;;) {
                unsigned char buffer[4096];
                auto [rec, n] = co_await stream.async_read_some(asio::buffer(buffer), rfork::detail::as_tuple_awaitable);
                update([n = n](counts& c) { c.bytes += n; });
                if (rec) break;
            }
        }
        update([](counts& c) { ++c.ended; });
    }

    template <typename Change>
    void update(Change change) {
        {
            std::lock_guard lock(mutex_);
            change(counts_);
        }
        changed_.notify_all();
    }

    void note_failure(std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& what) {
            update([&](counts& c) { c.failure = what.what(); });
        }
    }

    asio::io_context io_;
    asio::ssl::context tls_{asio::ssl::context::tls_server};
    asio::ip::tcp::acceptor acceptor_{io_};
    std::mutex mutex_;
    std::condition_variable changed_;
    counts counts_;
    std::thread thread_;
};

// An authority in `pki` and the certificates it signs there for `hosts`
// (HOST.crt, HOST.key, ca.crt), made by rfork-agent keygen.
void make_certificates(const std::string& pki, const std::vector<std::string>& hosts) {
    const auto agent = program_path("rfork-agent");
    REQUIRE(running_program({agent, "keygen", "--ca", pki}).finish(30s).status == 0);
    for (auto& host : hosts)
        REQUIRE(running_program({agent, "keygen", "--host", host, "--ca", pki, pki}).finish(30s).status == 0);
}

// An agent's options for the certificate of `host` in `pki`.
std::string certificate_args(const std::string& pki, const std::string& host) {
    return "--cert " + pki + "/" + host + ".crt --key " + pki + "/" + host + ".key --ca " + pki + "/ca.crt";
}

template <typename T, void (*Free)(T*)>
struct openssl_deleter {
    void operator()(T* p) const { Free(p); }
};
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;

x509_ptr read_certificate(const std::string& path) {
    std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "r"), std::fclose);
    REQUIRE(file);
    x509_ptr cert(PEM_read_X509(file.get(), nullptr, nullptr, nullptr));
    REQUIRE(cert);
    return cert;
}

// A certificate's subjectAltName entries, as "DNS:name" and "IP:address".
std::vector<std::string> subject_alt_names(const std::string& path) {
    auto cert = read_certificate(path);
    std::vector<std::string> names;
    auto* all = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; all && i < sk_GENERAL_NAME_num(all); ++i) {
        const GENERAL_NAME* entry = sk_GENERAL_NAME_value(all, i);
        if (entry->type == GEN_DNS) {
            names.push_back("DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(entry->d.dNSName)),
                                                 static_cast<std::size_t>(ASN1_STRING_length(entry->d.dNSName))));
        } else if (entry->type == GEN_IPADD) {
            char text[INET6_ADDRSTRLEN] = "";
            int length = ASN1_STRING_length(entry->d.iPAddress);
            ::inet_ntop(length == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(entry->d.iPAddress), text, sizeof text);
            names.push_back(std::string("IP:") + text);
        } else {
            names.push_back("other:" + std::to_string(entry->type));
        }
    }
    GENERAL_NAMES_free(all);
    return names;
}

// A certificate as keygen made them before they named their host: CN only,
// signed by the authority in `pki` (PKI/NAME.crt, PKI/NAME.key, mode 0600).
void make_certificate_without_names(const std::string& pki, const std::string& name) {
    auto ca = read_certificate(pki + "/ca.crt");
    std::unique_ptr<FILE, decltype(&std::fclose)> ca_key_file(std::fopen((pki + "/ca.key").c_str(), "r"), std::fclose);
    REQUIRE(ca_key_file);
    pkey_ptr ca_key(PEM_read_PrivateKey(ca_key_file.get(), nullptr, nullptr, nullptr));
    pkey_ptr key(EVP_EC_gen("P-256"));
    x509_ptr cert(X509_new());
    REQUIRE((ca_key && key && cert));
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
    REQUIRE(X509_sign(cert.get(), ca_key.get(), EVP_sha256()) != 0);
    auto key_path = pki + "/" + name + ".key";
    int fd = ::open(key_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    std::unique_ptr<FILE, decltype(&std::fclose)> key_file(::fdopen(fd, "w"), std::fclose);
    std::unique_ptr<FILE, decltype(&std::fclose)> cert_file(std::fopen((pki + "/" + name + ".crt").c_str(), "w"),
                                                           std::fclose);
    REQUIRE((key_file && cert_file));
    REQUIRE(PEM_write_PrivateKey(key_file.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1);
    REQUIRE(PEM_write_X509(cert_file.get(), cert.get()) == 1);
}

std::vector<std::string> as_user(const char* uid, std::vector<std::string> argv) {
    std::vector<std::string> all{"/usr/bin/setpriv", std::string("--reuid=") + uid, std::string("--regid=") + uid,
                                 "--clear-groups", "--"};
    all.insert(all.end(), argv.begin(), argv.end());
    return all;
}

// Where `host`'s agent keeps its host's own secret, as the test sees it.
std::string local_secret_of(const test_hosts& hosts, const std::string& host) {
    return "/proc/" + std::to_string(hosts.agent_pid(host)) + "/root/run/rfork/local.secret";
}

// An agent started with `credentials`, its socket and work dir in `run_dir`,
// that refuses them: it exits 1, having listened on nothing and made
// nothing; and doctor, given the same options, fails too. Their runs.
struct refused_start {
    run_result agent, doctor;
};
refused_start start_refused(const std::filesystem::path& run_dir, const std::vector<std::string>& credentials) {
    std::vector<std::string> argv{program_path("rfork-agent"), "--listen", "127.0.0.1:7999", "--socket",
                                  (run_dir / "agent.sock").string(), "--work-dir", (run_dir / "work").string()};
    argv.insert(argv.end(), credentials.begin(), credentials.end());
    refused_start runs;
    runs.agent = running_program(argv).finish(30s);
    INFO("agent's stderr: " << runs.agent.err);
    CHECK(runs.agent.status == 1);
    CHECK_FALSE(std::filesystem::exists(run_dir / "agent.sock"));
    CHECK_FALSE(std::filesystem::exists(run_dir / "work"));
    argv.insert(argv.begin() + 1, "doctor");
    runs.doctor = running_program(argv).finish(60s);
    INFO("doctor's stdout: " << runs.doctor.out << "\ndoctor's stderr: " << runs.doctor.err);
    CHECK(runs.doctor.status != 0);
    return runs;
}

}  // namespace

TEST_SUITE("integration.auth") {
    TEST_CASE("keygen makes a private secret and never overwrites one") {
        require_fork_environment();
        temp_dir dir("auth");
        auto secret = (dir.path / "secret").string();
        auto made = running_program({program_path("rfork-agent"), "keygen", secret}).finish(30s);
        CHECK(made.status == 0);
        struct stat st {};
        REQUIRE(::stat(secret.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0600);
        CHECK(read_file(secret).size() == 65);  // 32 bytes in hex, and a newline
        auto before = read_file(secret);
        auto again = running_program({program_path("rfork-agent"), "keygen", secret}).finish(30s);
        CHECK(again.status == 1);
        CHECK(again.err.find("File exists") != std::string::npos);
        CHECK(read_file(secret) == before);

        // An agent refuses a secret others can read.
        ::chmod(secret.c_str(), 0644);
        auto agent = running_program({program_path("rfork-agent"), "--listen", "7999", "--secret-file", secret,
                                      "--socket", (dir.path / "agent.sock").string(), "--work-dir",
                                      (dir.path / "work").string()})
                         .finish(30s);
        INFO("stderr: " << agent.err);
        CHECK(agent.status == 1);
        CHECK(agent.err.find("group or others may read or write it (mode 0644)") != std::string::npos);
        CHECK(agent.err.find("chmod 600 " + secret) != std::string::npos);
    }

    TEST_CASE("keygen --host refuses a name that is not a plain host name or a link and writes nothing") {
        require_fork_environment();
        temp_dir dir("auth");
        const auto agent = program_path("rfork-agent");
        auto pki = (dir.path / "pki").string();
        auto out = dir.path / "pki" / "out";
        fs::create_directories(out / "a");  // where "a/b" would lead
        REQUIRE(running_program({agent, "keygen", "--ca", pki}).finish(30s).status == 0);
        fs::create_symlink(out, dir.path / "link-to-out");
        fs::create_symlink(dir.path / "elsewhere.key", out / "c.key");  // a link where c.key would go
        auto everything = [&] {
            std::vector<std::string> paths;
            for (auto& entry : fs::recursive_directory_iterator(dir.path)) paths.push_back(entry.path().string());
            std::sort(paths.begin(), paths.end());
            return paths;
        };
        const auto before = everything();
        struct refusal {
            std::string name, out, error;
        };
        for (auto& bad : {refusal{"../x", out.string(), "not a plain host name"},
                          refusal{"a/b", out.string(), "not a plain host name"},
                          refusal{"..", out.string(), "not a plain host name"},
                          refusal{".hidden", out.string(), "not a plain host name"},
                          refusal{std::string(254, 'n'), out.string(), "not a plain host name"},
                          refusal{"d", (dir.path / "link-to-out").string(), "is a symbolic link"},
                          refusal{"c", out.string(), "File exists"}}) {
            CAPTURE(bad.name);
            CAPTURE(bad.out);
            auto r = running_program({agent, "keygen", "--host", bad.name, "--ca", pki, bad.out}).finish(30s);
            INFO("stderr: " << r.err);
            CHECK(r.status == 1);
            CHECK(r.err.find(bad.error) != std::string::npos);
            CHECK(everything() == before);  // nothing made, inside OUT or out of it
        }
        // A plain name still works: a private key and its certificate.
        auto good = running_program({agent, "keygen", "--host", "node-1.example", "--ca", pki, out.string()}).finish(30s);
        INFO("stderr: " << good.err);
        CHECK(good.status == 0);
        struct stat st {};
        REQUIRE(::lstat((out / "node-1.example.key").c_str(), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK((st.st_mode & 07777) == 0600);
        CHECK(fs::is_regular_file(out / "node-1.example.crt"));
    }

    TEST_CASE("agents with the same secret fork over TLS") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        CHECK(hosts.agent_log("b").find("agents must prove the secret") != std::string::npos);
        CHECK(hosts.agent_log("b").find("INSECURE") == std::string::npos);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("an agent with another secret is refused and nothing is restored") {
        require_fork_environment();
        temp_dir dir("auth");
        auto other = (dir.path / "other-secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", other}).finish(30s).status == 0);
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--secret-file " + other}});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find("--secret-file") != std::string::npos);
        CHECK(hosts.wait_for_events("b", "peer_refused"));
        CHECK(any_event_with(hosts.events("b", "peer_refused"), "text", "no TLS with the shared secret"));
        CHECK(hosts.events("b", "image_receiving").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a plain TCP peer gets nothing from a TLS agent and forks keep succeeding") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        for (const char* mode : {"garbage", "version", "truncated"}) {
            CAPTURE(mode);
            auto r = hosts.run("a", {program_path("raw_peer"), hosts.address("b"), "7000", mode});
            INFO("stdout: " << r.out << "\nstderr: " << r.err);
            CHECK(r.status == 0);
            CHECK(lines_with(r.out, "handshake ").empty());  // no rfork answer at all
            CHECK(lines_with(r.out, "error code=").empty());
        }
        CHECK(hosts.events("b", "image_receiving").empty());
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a", "b"}, {{"b", 1}});
    }

    TEST_CASE("a flood of failed TLS handshakes makes at most a line a second in the log") {
        require_fork_environment();
        test_hosts hosts({"a", "b"});
        auto started = std::chrono::steady_clock::now();
        constexpr int flood = 40;
        std::vector<int> peers;
        for (int i = 0; i < flood; ++i) {
            int fd = -1;
            hosts.in_network("a", [&] { fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
            REQUIRE(fd >= 0);
            peers.push_back(fd);
            sockaddr_in to{};
            to.sin_family = AF_INET;
            to.sin_port = htons(7000);
            REQUIRE(::inet_pton(AF_INET, hosts.address("b").c_str(), &to.sin_addr) == 1);
            timeval bound{30, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
            REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
            const char garbage[] = "GET / HTTP/1.1\r\n\r\n";
            REQUIRE(::write(fd, garbage, sizeof garbage - 1) == static_cast<ssize_t>(sizeof garbage - 1));
        }
        // Each connection is through (refused) once the agent has closed it.
        int closed = 0;
        for (int fd : peers) {
            char buffer[4096];
            ssize_t n;
            while ((n = ::read(fd, buffer, sizeof buffer)) > 0) {
            }
            closed += n == 0 || errno == ECONNRESET;
            ::close(fd);
        }
        REQUIRE(closed == flood);
        auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);
        auto lines = lines_with(hosts.agent_log("b"), "refused ").size();
        INFO(agent_logs(hosts, {"b"}));
        CHECK(lines >= 1);
        CHECK(lines <= static_cast<std::size_t>(seconds.count()) + 2);
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a receiver restores processes of root only when started with --allow-root") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.allow_root = false});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::not_permitted);
        CHECK(error.find("--allow-root") != std::string::npos);
        CHECK(hosts.events("b", "child_restored").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a receiver limited to some uids refuses others") {
        require_fork_environment();
        // The programs here run as root; uids 4242 and 4343 are allowed, root is not.
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--allow-uid 4242,4343"}, .allow_root = false});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        auto error = expect_failed_fork(r, rfork::errc::not_permitted);
        CHECK(error.find("uid 0") != std::string::npos);
        check_nothing_left(hosts, {"a", "b"}, {});

        auto bad = running_program({program_path("rfork-agent"), "--listen", "7999", "--allow-uid", "0,5"}).finish(30s);
        CHECK(bad.status == 2);
        CHECK(bad.err.find("--allow-uid takes uids other than 0") != std::string::npos);
    }

    TEST_CASE("only root and the --local-users may use the local socket") {
        require_fork_environment();
        SUBCASE("by default the socket is root's alone") {
            test_hosts hosts({"a", "b"});
            auto r = hosts.run("a", as_user("4242", {program_path("fork_or_report"), "b:7000"}));
            auto error = expect_failed_fork(r, rfork::errc::agent_not_found);
            CHECK(error.find("Permission denied") != std::string::npos);
        }
        SUBCASE("a listed user's request is taken") {
            // Its fork itself fails on this machine, whose root lacks
            // CAP_SYS_RESOURCE: CRIU cannot read another user's rlimits here.
            test_hosts hosts({"a", "b"}, {.agent_args = {"a=--local-users 4242", "b=--allow-uid 4242"}});
            auto r = hosts.run("a", as_user("4242", {program_path("fork_or_report"), "b:7000"}));
            INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
            auto requests = hosts.events("a", "fork_request");
            REQUIRE(requests.size() == 1);
            CHECK(requests[0]["uid"] == "4242");
            CHECK(requests[0]["endpoint"] == "b:7000");
            CHECK(r.out.find("may not use this agent") == std::string::npos);
            check_nothing_left(hosts, {"a", "b"}, {});
        }
        SUBCASE("another user is refused by the agent") {
            test_hosts hosts({"a", "b"}, {.agent_args = {"a=--local-users 4242"}});
            auto r = hosts.run("a", as_user("4343", {program_path("fork_or_report"), "b:7000"}));
            auto error = expect_failed_fork(r, rfork::errc::not_permitted);
            CHECK(error.find("uid 4343 may not use this agent") != std::string::npos);
        }
    }

    TEST_CASE("agents with certificates of one authority fork over TLS") {
        require_fork_environment();
        test_hosts hosts({"a", "b"}, {.certificates = true});
        CHECK(hosts.agent_log("b").find("must show a certificate signed by") != std::string::npos);
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a", "b"}));
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        // b's certificate names its address too (scripts/hosts): dialed by it, it passes as well.
        auto by_address = hosts.run("a", {program_path("fork_or_report"), hosts.address("b") + ":7000"});
        INFO("by address: stdout: " << by_address.out << "\nstderr: " << by_address.err);
        CHECK(lines_with(by_address.out, "child goes on").size() == 1);
        // The origin b records is the name a's certificate holds.
        CHECK(hosts.wait_for_events("b", "child_restored", 2));
        auto restored = hosts.events("b", "child_restored");
        CHECK(restored.size() == 2);
        for (auto& child : restored) CHECK(child["origin"] == "a");
        check_nothing_left(hosts, {"a", "b"}, {{"b", 2}});
    }

    TEST_CASE("keygen with several --host names them all in subjectAltName and the first names the files") {
        require_fork_environment();
        temp_dir dir("auth");
        const auto agent = program_path("rfork-agent");
        auto pki = (dir.path / "pki").string();
        fs::create_directory(pki);
        REQUIRE(running_program({agent, "keygen", "--ca", pki}).finish(30s).status == 0);
        auto out = dir.path / "out";
        fs::create_directory(out);
        auto made = running_program({agent, "keygen", "--host", "node1.example", "--host", "10.1.2.3", "--host",
                                     "fd00::7", "--ca", pki, out.string()})
                        .finish(30s);
        INFO("stderr: " << made.err);
        REQUIRE(made.status == 0);
        CHECK(subject_alt_names((out / "node1.example.crt").string()) ==
              std::vector<std::string>{"DNS:node1.example", "IP:10.1.2.3", "IP:fd00::7"});
        std::vector<std::string> files;
        for (auto& entry : fs::directory_iterator(out)) files.push_back(entry.path().filename().string());
        std::sort(files.begin(), files.end());
        CHECK(files == std::vector<std::string>{"node1.example.crt", "node1.example.key"});
        // One name is one entry.
        REQUIRE(running_program({agent, "keygen", "--host", "b", "--ca", pki, out.string()}).finish(30s).status == 0);
        CHECK(subject_alt_names((out / "b.crt").string()) == std::vector<std::string>{"DNS:b"});

        // An address cannot name the files, nor a name be odd or repeated: nothing is made.
        struct refusal {
            std::vector<std::string> names;
            std::string error;
        };
        for (auto& bad : {refusal{{"fd00::7", "node2"}, "give a name first and the address after it"},
                          refusal{{"node2", "bad name"}, "neither a plain host name"},
                          refusal{{"node2", "*.example"}, "neither a plain host name"},
                          refusal{{"node2", "10.1.2.3", "10.1.2.3"}, "--host 10.1.2.3 is given twice"}}) {
            CAPTURE(bad.error);
            std::vector<std::string> argv{agent, "keygen"};
            for (auto& name : bad.names) argv.insert(argv.end(), {"--host", name});
            argv.insert(argv.end(), {"--ca", pki, out.string()});
            auto r = running_program(argv).finish(30s);
            INFO("stderr: " << r.err);
            CHECK(r.status == 1);
            CHECK(r.err.find(bad.error) != std::string::npos);
            CHECK(std::distance(fs::directory_iterator(out), fs::directory_iterator{}) == 4);
        }
    }

    TEST_CASE("an agent refuses a certificate that names no host and a --name its certificate does not hold") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        make_certificates(pki, {"b"});
        make_certificate_without_names(pki, "old");
        REQUIRE(subject_alt_names(pki + "/old.crt").empty());
        struct refusal {
            std::string cert, name, error, fix;
        };
        for (auto& bad : {refusal{"old", "", "--cert " + pki + "/old.crt names no host (it has no subjectAltName",
                                  "make it again with rfork-agent keygen --host NAME"},
                          refusal{"b", "c", "--name c is not a name of --cert " + pki + "/b.crt (it names b)",
                                  "make the certificate again with rfork-agent keygen --host c"}}) {
            CAPTURE(bad.cert);
            auto run_dir = dir.path / ("run-" + bad.cert);
            fs::create_directory(run_dir);
            std::vector<std::string> credentials{"--cert", pki + "/" + bad.cert + ".crt", "--key",
                                                 pki + "/" + bad.cert + ".key", "--ca", pki + "/ca.crt"};
            if (!bad.name.empty()) credentials.insert(credentials.end(), {"--name", bad.name});
            auto [started, doctor] = start_refused(run_dir, credentials);
            INFO("agent's stderr: " << started.err);
            CHECK(started.err.find(bad.error) != std::string::npos);
            CHECK(started.err.find(bad.fix) != std::string::npos);
            INFO("doctor's stdout: " << doctor.out << "\ndoctor's stderr: " << doctor.err);
            if (bad.name.empty()) {
                CHECK(only_line(doctor.out, "FAIL credentials load").find("names no host") != std::string::npos);
            } else {
                CHECK(only_line(doctor.out, "FAIL certificate names").find("not --name c") != std::string::npos);
            }
        }
    }

    TEST_CASE("a stolen node key does not pass for another node and nothing is sent to it") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        make_certificates(pki, {"a", "c"});
        // b's agent holds c's certificate and key, signed by the authority a
        // trusts, and calls itself c, as a thief of c's key would.
        test_hosts hosts({"a", "b"}, {.agent_args = {"a=" + certificate_args(pki, "a"),
                                                     "b=" + certificate_args(pki, "c") + " --name c"},
                                      .certificates = true});
        for (const auto& host : {std::string("b"), hosts.address("b")}) {
            CAPTURE(host);
            auto r = hosts.run("a", {program_path("fork_or_report"), host + ":7000"});
            INFO(agent_logs(hosts, {"a", "b"}));
            auto error = expect_failed_fork(r, rfork::errc::not_permitted);
            CHECK(error.find("the agent at " + host + ":7000 showed a certificate for c, not " + host) !=
                  std::string::npos);
        }
        // doctor --peer on a says the same.
        auto doctor = hosts.run("a", {program_path("rfork-agent"), "doctor", "--listen", "0.0.0.0:7000", "--cert",
                                      pki + "/a.crt", "--key", pki + "/a.key", "--ca", pki + "/ca.crt", "--allow-root",
                                      "--peer", "b:7000"});
        INFO("doctor's stdout: " << doctor.out << "\ndoctor's stderr: " << doctor.err);
        CHECK(doctor.status != 0);
        CHECK(only_line(doctor.out, "ok   certificate names").find("a: peers must dial") != std::string::npos);
        CHECK(only_line(doctor.out, "FAIL peer b:7000").find("showed a certificate for c, not b") != std::string::npos);
        // b saw the handshakes fail (failed handshakes are logged at most
        // once a second), and took no image.
        CHECK(hosts.wait_for_events("b", "peer_refused"));
        CHECK(hosts.events("b", "image_receiving").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("a peer may claim as origin only a name its certificate holds") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        make_certificates(pki, {"a", "b", "c"});
        test_hosts hosts({"a", "b"}, {.agent_args = {"a=" + certificate_args(pki, "a"), "b=" + certificate_args(pki, "b")},
                                      .certificates = true});
        // A peer with c's certificate, valid, claims to be a: refused before anything is received.
        auto claim = hosts.raw_tls_peer_with_certificate("a", hosts.address("b"), 7000, "origin=a", pki + "/c.crt",
                                                         pki + "/c.key", pki + "/ca.crt");
        INFO("raw peer claiming a: " << claim.out << agent_logs(hosts, {"b"}));
        CHECK(claim.status == 0);
        auto refusals = lines_with(claim.out, "error code=" + error_value(rfork::errc::not_permitted));
        REQUIRE(refusals.size() == 1);
        CHECK(refusals[0].find("claims to be a, but its certificate names c") != std::string::npos);
        CHECK(hosts.wait_for_events("b", "restore_failed"));
        auto failed = hosts.events("b", "restore_failed");
        REQUIRE(failed.size() == 1);
        CHECK(failed[0]["code"] == error_value(rfork::errc::not_permitted));
        CHECK(failed[0]["text"].find("claims to be a") != std::string::npos);
        CHECK(hosts.events("b", "image_receiving").empty());

        // The same peer as itself gets past that check (and no further: its image never comes).
        auto honest = hosts.raw_tls_peer_with_certificate("a", hosts.address("b"), 7000, "origin=c", pki + "/c.crt",
                                                          pki + "/c.key", pki + "/ca.crt");
        INFO("raw peer claiming c: " << honest.out);
        CHECK(honest.status == 0);
        CHECK(lines_with(honest.out, "error code=").size() == 1);
        CHECK(lines_with(honest.out, "error code=" + error_value(rfork::errc::not_permitted)).empty());
        CHECK(hosts.wait_for_events("b", "image_receiving"));
        auto receiving = hosts.events("b", "image_receiving");
        REQUIRE(receiving.size() == 1);
        CHECK(receiving[0]["bytes"] == "4096");
        CHECK(receiving[0]["origin"] == "c");
        CHECK(receiving[0]["origin_pid"] == "1234");
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("an agent whose certificate another authority signed is refused and nothing is restored") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        make_certificates(pki, {"b"});
        test_hosts hosts({"a", "b"}, {.agent_args = {"b=--cert " + pki + "/b.crt --key " + pki + "/b.key --ca " + pki +
                                                     "/ca.crt"},
                                      .certificates = true});
        auto r = hosts.run("a", {program_path("fork_or_report"), "b:7000"});
        INFO(agent_logs(hosts, {"a", "b"}));
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find("no TLS with the agent at b:7000") != std::string::npos);
        CHECK(hosts.wait_for_events("b", "peer_refused"));
        CHECK(any_event_with(hosts.events("b", "peer_refused"), "text", "no TLS"));
        CHECK(hosts.events("b", "image_receiving").empty());
        check_nothing_left(hosts, {"a", "b"}, {});
    }

    TEST_CASE("an agent without credentials makes a private secret of its host and forks to itself through loopback") {
        require_fork_environment();
        test_hosts hosts({"a"}, {.no_credentials = true});
        auto secret = local_secret_of(hosts, "a");
        struct stat st {};
        REQUIRE(::lstat(secret.c_str(), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK((st.st_mode & 07777) == 0600);
        CHECK(st.st_uid == 0);
        CHECK(read_file(secret).size() == 65);  // as rfork-agent keygen writes one

        // Loopback only: the host's own address is closed.
        auto far = hosts.raw_tls_peer("a", hosts.address("a"), 7000, "version", secret);
        CHECK(lines_starting_with(far.out, "connect failed: ").size() == 1);
        // On loopback, inside TLS with that secret, rfork's protocol answers.
        auto near = hosts.raw_tls_peer("a", "127.0.0.1", 7000, "version", secret);
        INFO("raw peer: " << near.out);
        CHECK(lines_with(near.out, "error code=" + error_value(rfork::errc::unsupported_version)).size() == 1);

        auto r = hosts.run("a", {program_path("fork_or_report"), "127.0.0.1:7000"});
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a"}));
        CHECK(lines_with(r.out, "child goes on").size() == 1);
        check_nothing_left(hosts, {"a"}, {{"a", 1}});
    }

    TEST_CASE("two agents without credentials on one host share its secret and fork to each other") {
        require_fork_environment();
        test_hosts hosts({"a"}, {.no_credentials = true});
        temp_dir dir("auth");
        auto log = (dir.path / "second.log").string();
        auto events = (dir.path / "second.events").string();
        std::ofstream{log};  // watched from the start
        std::ofstream{events};
        // A second agent beside the host's, its socket in the same directory;
        // in this test's cgroup, where on cgroup v2 it cannot make children's.
        auto second = hosts.start("a", {"/bin/sh", "-c", "exec \"$@\" 2>" + log, "sh", program_path("rfork-agent"),
                                        "--listen", "127.0.0.1:7001", "--socket", "/run/rfork/second.sock",
                                        "--work-dir", "/run/rfork/second-work", "--name", "second", "--allow-root",
                                        "--allow-unlimited-children", "--event-log", events});
        auto second_events = [&](const std::string& name) {
            std::size_t n = 0;
            for (auto& e : parse_events(read_file(events))) n += e.name == name;
            return n;
        };
        REQUIRE(wait_for_file(events, [&](const std::string&) { return second_events("agent_ready") == 1; }, 30s));
        INFO("second agent's log: " << read_file(log) << agent_logs(hosts, {"a"}));
        auto there = hosts.run("a", {program_path("fork_or_report"), "127.0.0.1:7001"});
        CHECK(lines_with(there.out, "child goes on").size() == 1);
        auto back = hosts.run("a", {program_path("fork_or_report"), "127.0.0.1:7000"},
                              {{"RFORK_AGENT_SOCKET", "/run/rfork/second.sock"}});
        CHECK(lines_with(back.out, "child goes on").size() == 1);
        CHECK(wait_for_file(events, [&](const std::string&) { return second_events("child_ended") == 1; }, 30s));
        second.finish(0ms);  // stopped: its child has ended
        check_nothing_left(hosts, {"a"}, {{"a", 1}});
    }

    TEST_CASE("a local user without the host's secret gets nothing from an agent without credentials") {
        require_fork_environment();
        // --allow-root as well: the worst case, where an image would run as root.
        test_hosts hosts({"a"}, {.no_credentials = true});
        // Plain TCP, as nobody: rfork's handshake and a whole image header. An
        // agent that read them would answer with its handshake, then wait for
        // the image longer than this bound (--idle-timeout, 60 s).
        auto r = hosts.run("a", as_user("65534", {program_path("raw_peer"), "127.0.0.1", "7000", "stall"}), {}, 30s);
        INFO("stdout: " << r.out << "\nstderr: " << r.err << agent_logs(hosts, {"a"}));
        CHECK(r.status == 0);  // connected, and the agent closed at once
        CHECK(lines_with(r.out, "closed").size() == 1);
        CHECK(lines_with(r.out, "handshake ").empty());
        CHECK(lines_with(r.out, "error code=").empty());
        CHECK(lines_with(r.out, "frame type=").empty());

        // TLS with a secret of another host: refused the same way.
        temp_dir dir("auth");
        auto other = (dir.path / "other-secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", other}).finish(30s).status == 0);
        auto wrong = hosts.raw_tls_peer("a", "127.0.0.1", 7000, "stall", other);
        INFO("raw TLS peer: " << wrong.out);
        CHECK(lines_starting_with(wrong.out, "tls failed: ").size() == 1);
        CHECK(lines_with(wrong.out, "handshake ").empty());

        // Nothing received, restored or left, and no child known to the agent.
        check_nothing_left(hosts, {"a"}, {});
        auto list = hosts.run("a", {program_path("rfork-agent"), "list"});
        CHECK(list.status == 0);
        CHECK(lines_starting_with(list.out, "ID ").size() == 1);
        CHECK(std::count(list.out.begin(), list.out.end(), '\n') == 1);  // the header alone
    }

    TEST_CASE("an agent refuses a local secret that is a symlink or not root's or open to others") {
        require_fork_environment();
        temp_dir dir("auth");
        auto good = (dir.path / "good-secret").string();
        REQUIRE(running_program({program_path("rfork-agent"), "keygen", good}).finish(30s).status == 0);
        const auto good_text = read_file(good);
        struct bad_secret {
            const char* name;
            std::function<void(const std::string&)> make;
        };
        auto copy = [&](const std::string& path, fs::perms mode) {
            fs::copy_file(good, path);
            fs::permissions(path, mode);
        };
        using p = fs::perms;
        for (auto& bad : {bad_secret{"symlink", [&](const std::string& path) { fs::create_symlink(good, path); }},
                          bad_secret{"group-readable", [&](const std::string& path) { copy(path, p::owner_read | p::owner_write | p::group_read); }},
                          bad_secret{"others-readable", [&](const std::string& path) { copy(path, p::owner_read | p::owner_write | p::others_read); }},
                          bad_secret{"not root's", [&](const std::string& path) {
                                         copy(path, p::owner_read | p::owner_write);
                                         REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
                                     }}}) {
            CAPTURE(bad.name);
            auto run_dir = dir.path / (std::string("run-") + bad.name);
            fs::create_directory(run_dir);
            auto secret = (run_dir / "local.secret").string();
            bad.make(secret);
            struct stat before {};
            REQUIRE(::lstat(secret.c_str(), &before) == 0);
            auto agent = running_program({program_path("rfork-agent"), "--listen", "127.0.0.1:7999", "--socket",
                                          (run_dir / "agent.sock").string(), "--work-dir",
                                          (run_dir / "work").string()})
                             .finish(30s);
            INFO("stderr: " << agent.err);
            CHECK(agent.status == 1);
            CHECK(agent.err.find(secret) != std::string::npos);  // the file is named
            // It started nothing and changed nothing.
            CHECK_FALSE(fs::exists(run_dir / "agent.sock"));
            CHECK_FALSE(fs::exists(run_dir / "work"));
            struct stat after {};
            REQUIRE(::lstat(secret.c_str(), &after) == 0);
            CHECK(after.st_ino == before.st_ino);
            CHECK(after.st_mode == before.st_mode);
            CHECK(after.st_uid == before.st_uid);
            CHECK(read_file(good) == good_text);
        }
    }

    TEST_CASE("an agent and doctor refuse a secret file or key that is a link or no regular file or not root's or open to others") {
        require_fork_environment();
        temp_dir dir("auth");
        const auto agent = program_path("rfork-agent");
        auto good = (dir.path / "good-secret").string();
        REQUIRE(running_program({agent, "keygen", good}).finish(30s).status == 0);
        auto pki = (dir.path / "pki").string();
        fs::create_directory(pki);
        make_certificates(pki, {"b"});
        const auto good_key = pki + "/b.key";
        using p = fs::perms;
        auto copy = [](const std::string& from, const std::string& to, fs::perms mode) {
            fs::copy_file(from, to);
            fs::permissions(to, mode);
        };
        struct bad_file {
            const char* name;
            bool is_key;
            std::function<void(const std::string&)> make;
            std::string why, fix;  // as the agent and doctor say it
        };
        int case_number = 0;
        for (auto& bad : {
                 bad_file{"secret of uid 65534", false,
                          [&](const std::string& path) {
                              copy(good, path, p::owner_read | p::owner_write);
                              REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
                          },
                          "belongs to uid 65534, not root", "chown root "},
                 bad_file{"secret symlink", false, [&](const std::string& path) { fs::create_symlink(good, path); },
                          "symbolic link", "put the file itself there"},
                 bad_file{"secret FIFO", false,
                          [&](const std::string& path) { REQUIRE(::mkfifo(path.c_str(), 0600) == 0); },
                          "not a regular file", ""},
                 bad_file{"group-readable key", true,
                          [&](const std::string& path) { copy(good_key, path, p::owner_read | p::owner_write | p::group_read); },
                          "group or others may read or write it (mode 0640)", "chmod 600 "},
             }) {
            CAPTURE(bad.name);
            auto run_dir = dir.path / ("run-" + std::to_string(case_number++));
            fs::create_directory(run_dir);
            auto path = (run_dir / (bad.is_key ? "b.key" : "secret")).string();
            bad.make(path);
            std::vector<std::string> credentials =
                bad.is_key ? std::vector<std::string>{"--cert", pki + "/b.crt", "--key", path, "--ca", pki + "/ca.crt"}
                           : std::vector<std::string>{"--secret-file", path};
            auto [started, doctor] = start_refused(run_dir, credentials);
            INFO("agent's stderr: " << started.err);
            CHECK(started.err.find("refusing " + std::string(bad.is_key ? "--key " : "--secret-file ") + path + ": ") !=
                  std::string::npos);  // the file is named
            CHECK(started.err.find(bad.why) != std::string::npos);
            CHECK(started.err.find("Fix: " + bad.fix) != std::string::npos);
            INFO("doctor's stdout: " << doctor.out << "\ndoctor's stderr: " << doctor.err);
            auto failure = only_line(doctor.out, std::string(bad.is_key ? "FAIL key " : "FAIL secret file ") + path);
            CHECK(failure.find(bad.why) != std::string::npos);
            if (!bad.fix.empty()) CHECK(doctor.out.find("  fix: " + bad.fix) != std::string::npos);
            CHECK(lines_starting_with(doctor.out, "ok   credentials load").empty());
        }
    }

    TEST_CASE("a sending agent with a shared secret sends nothing to a server that shows a certificate instead") {
        require_fork_environment();
        temp_dir dir("auth");
        auto pki = dir.path.string();
        make_certificates(pki, {"mitm"});
        test_hosts hosts({"a"});
        certificate_server server(hosts, "a", pki + "/mitm.crt", pki + "/mitm.key");
        auto where = "127.0.0.1:" + std::to_string(server.port());

        auto r = hosts.run("a", {program_path("fork_or_report"), where});
        INFO(agent_logs(hosts, {"a"}));
        auto error = expect_failed_fork(r, rfork::errc::agent_unreachable);
        CHECK(error.find(where) != std::string::npos);
        REQUIRE(server.wait_ended(1, 30s));
        auto seen = server.now();
        CHECK(seen.failure.empty());
        CHECK(seen.connections == 1);  // the fork did go there
        CHECK(seen.handshakes == 0);   // the agent refused the certificate
        CHECK(seen.bytes == 0);        // and sent nothing
        check_nothing_left(hosts, {"a"}, {});
    }
}
