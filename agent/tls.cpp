#include "peer_connection.hpp"

#include <fmt/core.h>

#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace rfork::agent {

namespace {

constexpr const char* psk_identity = "rfork-agent";
std::vector<unsigned char> shared_secret;  // one per agent process

unsigned client_psk(SSL*, const char*, char* identity, unsigned max_identity, unsigned char* psk, unsigned max_psk) {
    if (std::strlen(psk_identity) + 1 > max_identity || shared_secret.size() > max_psk) return 0;
    std::strcpy(identity, psk_identity);
    std::memcpy(psk, shared_secret.data(), shared_secret.size());
    return static_cast<unsigned>(shared_secret.size());
}

unsigned server_psk(SSL*, const char* identity, unsigned char* psk, unsigned max_psk) {
    if (!identity || std::strcmp(identity, psk_identity) != 0 || shared_secret.size() > max_psk) return 0;
    std::memcpy(psk, shared_secret.data(), shared_secret.size());
    return static_cast<unsigned>(shared_secret.size());
}

std::vector<unsigned char> read_secret(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot open --secret-file {}: {}", path, std::strerror(errno)));
    struct stat st {};
    ::fstat(fd, &st);
    std::string text(4096, '\0');
    auto n = ::read(fd, text.data(), text.size());
    ::close(fd);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        throw std::runtime_error(fmt::format("--secret-file {} is readable by others; chmod 600 it", path));
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (text.size() % 2 != 0 || text.size() < 64 || text.size() > 128)
        throw std::runtime_error(
            fmt::format("--secret-file {} must hold 32 to 64 bytes in hex (rfork-agent keygen makes one)", path));
    std::vector<unsigned char> secret;
    for (std::size_t i = 0; i < text.size(); i += 2) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(text.data() + i, text.data() + i + 2, value, 16);
        if (ec != std::errc{} || end != text.data() + i + 2)
            throw std::runtime_error(fmt::format("--secret-file {} is not hex", path));
        secret.push_back(static_cast<unsigned char>(value));
    }
    return secret;
}

}  // namespace

asio::ssl::context make_tls_context(const std::string& secret_file) {
    shared_secret = read_secret(secret_file);
    asio::ssl::context context(asio::ssl::context::tls);
    SSL_CTX* ctx = context.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    // The PSK callbacks work with TLS 1.3 given a SHA-256 suite.
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
    SSL_CTX_set_psk_client_callback(ctx, client_psk);
    SSL_CTX_set_psk_server_callback(ctx, server_psk);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // the PSK is the authentication
    return context;
}

void peer_connection::detect_dead_peer(std::chrono::seconds limit) {
    int fd = tcp().native_handle();
    int on = 1;
    int idle = static_cast<int>(std::max<std::int64_t>(1, limit.count() / 2));
    int interval = std::max(1, idle / 3), count = 3;
    unsigned timeout_ms = static_cast<unsigned>(limit.count() * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
}

std::string write_new_secret(const std::string& path) {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) return "no randomness from OpenSSL";
    std::string hex;
    for (auto b : bytes) hex += fmt::format("{:02x}", b);
    hex += '\n';
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return fmt::format("cannot create {}: {}", path, std::strerror(errno));
    bool ok = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
    ::close(fd);
    if (!ok) {
        ::unlink(path.c_str());
        return fmt::format("cannot write {}", path);
    }
    return {};
}

}  // namespace rfork::agent
