// TLS between agents: the contexts for each kind of credential (a shared
// secret, certificates, the host's own local secret), the checks around a
// handshake, and the private files they are read from.
#pragma once

#include <asio/ssl/context.hpp>

#include <openssl/ssl.h>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace rfork::agent {

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
