// A connection between two agents: TLS 1.3, authenticated by the agents'
// shared secret (--secret-file), their certificates, or, for an agent without
// credentials, the secret of its own host (loopback only). Both sides speak
// the same frames over it.
#pragma once

#include "common/async_mutex.hpp"

#include <rfork/detail/frame_io.hpp>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace rfork::agent {

class peer_connection {
public:
    using executor_type = asio::any_io_executor;

    explicit peer_connection(const executor_type& ex) : tcp_(ex), lock_(ex) {}

    asio::ip::tcp::socket& tcp() { return tls_ ? tls_->next_layer() : tcp_; }
    executor_type get_executor() { return tcp().get_executor(); }
    bool secure() const { return tls_.has_value(); }
    SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }

    // Moves the connected socket under TLS; handshake() then authenticates.
    void use_tls(asio::ssl::context& context) { tls_.emplace(std::move(tcp_), context); }
    template <typename Token>
    auto async_handshake(asio::ssl::stream_base::handshake_type side, Token&& token) {
        return tls_->async_handshake(side, std::forward<Token>(token));
    }

    template <typename Buffers, typename Token>
    auto async_read_some(const Buffers& buffers, Token&& token) {
        if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
        return tcp_.async_read_some(buffers, std::forward<Token>(token));
    }
    template <typename Buffers, typename Token>
    auto async_write_some(const Buffers& buffers, Token&& token) {
        if (tls_) return tls_->async_write_some(buffers, std::forward<Token>(token));
        return tcp_.async_write_some(buffers, std::forward<Token>(token));
    }

    // Writes whole frames, one at a time: several coroutines send on one
    // connection (a child's output, its pages, its exit). False once a write
    // has failed: the connection is of no use after that.
    asio::awaitable<bool> send(const detail::bytes& frames) {
        if (broken_) co_return false;
        co_await lock_.lock();
        auto ec = co_await detail::write_bytes(*this, frames);
        lock_.unlock();
        if (ec) broken_ = true;
        co_return !ec;
    }

    // A peer that vanishes (its host down, the network cut) is noticed within
    // about `limit`: unacknowledged data aborts the connection then
    // (TCP_USER_TIMEOUT), and an idle one is probed (keepalive).
    void detect_dead_peer(std::chrono::seconds limit);

    void cancel(std::error_code& ec) { tcp().cancel(ec); }
    void shutdown_send() {
        std::error_code ignored;
        tcp().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    }
    void close() {
        std::error_code ignored;
        tcp().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        tcp().close(ignored);
    }

private:
    asio::ip::tcp::socket tcp_;
    std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
    async_mutex lock_;
    bool broken_ = false;
};

// The text of a credential only root may read (`what` is its option, such as
// "--key"): a regular file, not a link, FIFO or device, owned by root, with no
// permission for group or others, checked on the open file. Throws
// std::runtime_error that names the file and the fix.
std::string read_private_file(const std::string& path, const std::string& what, std::size_t limit);

// TLS 1.3 with an external pre-shared key: both agents prove they hold the
// secret, and the connection is encrypted with forward secrecy (psk_dhe_ke).
// No certificates: none is offered, and a peer that shows one is refused.
// Throws std::runtime_error with a clear message.
asio::ssl::context make_tls_context(const std::string& secret_file);

// An agent without credentials listens on loopback only, with a secret of its
// host's own: `local.secret` beside its local socket, root's and private, so
// that only root (its agents) can speak to it. Agents sharing a socket
// directory share it.
std::string local_secret_path(const std::string& socket_path);
// The local secret's context; makes the secret when there is none (mode 0600,
// never over anything). Throws local_secret_refused when the file is a
// symlink, not root's, or open to group or others (std::runtime_error when it
// cannot be made).
struct local_secret_refused : std::runtime_error {
    local_secret_refused(const std::string& what, std::string why_, std::string fix_)
        : std::runtime_error(what), why(std::move(why_)), fix(std::move(fix_)) {}
    std::string why;  // what is wrong with the file
    std::string fix;  // the command that fixes it
};
asio::ssl::context make_local_tls_context(const std::string& path);
// The same, for a look only (doctor): nullopt when there is no secret yet.
std::optional<asio::ssl::context> load_local_tls_context(const std::string& path);

// A client's handshake in PSK mode must not end in a certificate: TLS 1.3
// lets a server that lacks the PSK ignore it and show one instead. Before the
// handshake, this makes any certificate fail it; after, the check makes sure
// the PSK was used (and certificates were verified, in certificate mode).
// In certificate mode the server's certificate must also name `host`, the
// host the client dialed (a DNS name, or an IP address literal): another
// node's key, stolen, does not pass for this one. False if OpenSSL cannot.
bool prepare_client_handshake(SSL* ssl, const std::string& host);
bool authenticated_as_required(SSL* ssl);
// After a failed client handshake: the names the server's certificate held
// when it failed for naming another host than the one dialed, or nullopt.
std::optional<std::string> names_of_wrong_host(SSL* ssl);
// Whether the peer of a server-side connection may call itself `origin`: in
// certificate mode its certificate must name it; with a secret, every holder
// is equal and the origin is taken as told. Returns why not, or nullopt.
std::optional<std::string> origin_refused(SSL* ssl, const std::string& origin);

// Writes a new random secret (32 bytes, hex) to `path`, mode 0600, never
// over an existing file. Returns an error message, or empty on success.
std::string write_new_secret(const std::string& path);

}  // namespace rfork::agent

namespace rfork::agent {

// TLS 1.3 with certificates: this agent presents `cert` (and its `key`), and
// accepts only peers whose certificate `ca` signed. Both sides verify. Throws
// std::runtime_error, also for a certificate that names no host (no
// subjectAltName).
asio::ssl::context make_tls_context(const std::string& cert, const std::string& key, const std::string& ca);

// `rfork-agent keygen --ca DIR`: a new certificate authority (DIR/ca.crt, DIR/ca.key).
// `rfork-agent keygen --host NAME [--host NAME ...] --ca DIR OUT`: a host
// certificate signed by it, whose subjectAltName holds every NAME (DNS:NAME,
// or IP:NAME for an address); the first names the files (OUT/NAME.crt,
// OUT/NAME.key). Returns an error message, or empty on success.
std::string make_ca(const std::string& dir);
std::string make_host_certificate(const std::vector<std::string>& names, const std::string& ca_dir,
                                  const std::string& out_dir);

// Whether `name` is an IPv4 or IPv6 address literal (without brackets).
bool is_address_literal(const std::string& name);
// The host names and addresses in a certificate's subjectAltName, as text.
std::vector<std::string> certificate_names(X509* cert);
// The same as one line ("a, 10.0.0.1"), or "no host".
std::string certificate_names_text(X509* cert);
// Whether `cert` names `host` (a DNS name, or an address literal), as the
// agents check it: subjectAltName only.
bool certificate_names_host(X509* cert, const std::string& host);

}  // namespace rfork::agent
