// A sending agent's bounds against the agent it sends to: a receiver that
// proves the secret, takes the image and then says nothing must not hold the
// program (or its frozen snapshot) for ever.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <rfork/error.hpp>
#include <rfork/protocol.hpp>

#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

using namespace rfork::test;

namespace {

int secret_slot() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// The agents' PSK, as agent/peer/tls.cpp takes it.
unsigned accept_psk(SSL* ssl, const char* identity, unsigned char* psk, unsigned max_psk) {
    auto* secret = static_cast<const std::vector<unsigned char>*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), secret_slot()));
    if (!secret || !identity || std::strcmp(identity, "rfork-agent") != 0 || secret->size() > max_psk) return 0;
    std::memcpy(psk, secret->data(), secret->size());
    return static_cast<unsigned>(secret->size());
}

// One connection's worth of a receiving agent that holds the hosts' secret,
// greets as an agent, takes whatever it is sent and never answers.
class silent_receiver {
public:
    silent_receiver(const test_hosts& hosts, const std::string& host)
        : secret_(read_secret_bytes(hosts.secret_file())), ctx_(SSL_CTX_new(TLS_server_method()), SSL_CTX_free) {
        SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_3_VERSION);
        SSL_CTX_set_ciphersuites(ctx_.get(), "TLS_AES_128_GCM_SHA256");
        SSL_CTX_set_ex_data(ctx_.get(), secret_slot(), &secret_);
        SSL_CTX_set_psk_server_callback(ctx_.get(), accept_psk);
        hosts.in_network(host, [this] { listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof at;
        REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
        REQUIRE(::listen(listener_, 1) == 0);
        REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&at), &len) == 0);
        port_ = ntohs(at.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~silent_receiver() {
        ::shutdown(listener_, SHUT_RDWR);  // ends a pending accept()
        {
            std::lock_guard lock(mutex_);
            if (connection_ >= 0) ::shutdown(connection_, SHUT_RDWR);
        }
        thread_.join();
        ::close(listener_);
    }
    silent_receiver(const silent_receiver&) = delete;
    silent_receiver& operator=(const silent_receiver&) = delete;

    std::uint16_t port() const { return port_; }

    // Bytes the sender sent inside TLS once it closed the connection;
    // nullopt if it had not closed within `bound`.
    std::optional<std::size_t> wait_closed(std::chrono::milliseconds bound) {
        std::unique_lock lock(mutex_);
        if (!changed_.wait_for(lock, bound, [this] { return closed_; })) return std::nullopt;
        return received_;
    }

private:
    void serve() {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        {
            std::lock_guard lock(mutex_);
            connection_ = fd;
        }
        std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx_.get()), SSL_free);
        SSL_set_fd(ssl.get(), fd);
        unsigned char buffer[16384];
        if (SSL_accept(ssl.get()) == 1 &&
            SSL_read(ssl.get(), buffer, rfork::protocol::handshake_size) == rfork::protocol::handshake_size) {
            auto hello = rfork::protocol::encode_handshake(rfork::protocol::role::agent);
            SSL_write(ssl.get(), hello.data(), static_cast<int>(hello.size()));
            for (int n; (n = SSL_read(ssl.get(), buffer, sizeof buffer)) > 0;) {
                std::lock_guard lock(mutex_);
                received_ += static_cast<std::size_t>(n);
            }
        }
        std::lock_guard lock(mutex_);
        closed_ = true;
        connection_ = -1;
        ::close(fd);
        changed_.notify_all();
    }

    std::vector<unsigned char> secret_;
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable changed_;
    int connection_ = -1;
    std::size_t received_ = 0;
    bool closed_ = false;
};

}  // namespace

TEST_SUITE("integration.limits") {
    TEST_CASE("a sending agent gives up on a receiver that takes the image and never answers") {
        require_fork_environment();
        // The answer is due within --handshake-timeout and CRIU's own bound
        // (--idle-timeout and a second per 64 MiB): about 5 s here.
        test_hosts hosts({"a"}, {.agent_args = {"a=--handshake-timeout 2 --idle-timeout 2"}});
        silent_receiver receiver(hosts, "a");
        auto where = "127.0.0.1:" + std::to_string(receiver.port());

        auto r = hosts.run("a", {program_path("fork_or_report"), where});
        INFO(agent_logs(hosts, {"a"}));
        auto error = expect_failed_fork(r, rfork::errc::timed_out);
        CHECK(error.find("did not answer within") != std::string::npos);
        auto sent = receiver.wait_closed(30s);
        REQUIRE(sent);
        CHECK(*sent > 4096);  // the image did go there: the wait was for the answer
        check_nothing_left(hosts, {"a"}, {});
    }
}
