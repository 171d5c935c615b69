#include "peer/tls.hpp"
#include "peer/certificates.hpp"

#include <fmt/core.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace rfork::agent {

// The text of a credential only root may read (`what` is its option, such as
// "--key"): a regular file, not a link, FIFO or device, owned by root, with no
// permission for group or others. Checked on the open file (O_NOFOLLOW, then
// fstat), so what is read is what was checked. Throws std::runtime_error that
// names the file and the fix.
std::string read_private_file(const std::string& path, const std::string& what, std::size_t limit) {
    auto refuse = [&](const std::string& why, const std::string& fix) {
        return std::runtime_error(fmt::format("refusing {} {}: {}; it must be a regular file of root's that only "
                                              "root may read. Fix: {}",
                                              what, path, why, fix));
    };
    auto make_it_so = fmt::format("put the file itself there, then chown root {} and chmod 600 {}", path, path);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && errno == ELOOP) throw refuse("it is a symbolic link", make_it_so);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot open {} {}: {}", what, path, std::strerror(errno)));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_it{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::runtime_error(fmt::format("cannot stat {} {}: {}", what, path, std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) throw refuse("it is not a regular file", make_it_so);
    if (st.st_uid != 0) throw refuse(fmt::format("it belongs to uid {}, not root", st.st_uid), "chown root " + path);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        throw refuse(fmt::format("group or others may read or write it (mode {:04o})", st.st_mode & 07777),
                     "chmod 600 " + path);
    std::string text;
    char buffer[4096];
    for (;;) {
        auto n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::runtime_error(fmt::format("cannot read {} {}: {}", what, path, std::strerror(errno)));
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > limit) {
            OPENSSL_cleanse(text.data(), text.size());
            throw std::runtime_error(fmt::format("{} {} is larger than {} bytes", what, path, limit));
        }
    }
    OPENSSL_cleanse(buffer, sizeof buffer);
    return text;
}

namespace {

constexpr const char* psk_identity = "rfork-agent";
constexpr std::size_t max_secret_text = 4096;

// The PSK lives with its SSL_CTX (ex data), which also marks a context as PSK-only.
struct psk_key {
    std::vector<unsigned char> bytes;
    ~psk_key() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

void free_psk(void*, void* key, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<psk_key*>(key); }

int psk_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_psk);
    return index;
}

const psk_key* psk_of(SSL_CTX* ctx) { return static_cast<const psk_key*>(SSL_CTX_get_ex_data(ctx, psk_index())); }

unsigned client_psk(SSL* ssl, const char*, char* identity, unsigned max_identity, unsigned char* psk,
                    unsigned max_psk) {
    auto* key = psk_of(SSL_get_SSL_CTX(ssl));
    if (!key || std::strlen(psk_identity) + 1 > max_identity || key->bytes.size() > max_psk) return 0;
    std::strcpy(identity, psk_identity);
    std::memcpy(psk, key->bytes.data(), key->bytes.size());
    return static_cast<unsigned>(key->bytes.size());
}

unsigned server_psk(SSL* ssl, const char* identity, unsigned char* psk, unsigned max_psk) {
    auto* key = psk_of(SSL_get_SSL_CTX(ssl));
    if (!key || !identity || std::strcmp(identity, psk_identity) != 0 || key->bytes.size() > max_psk) return 0;
    std::memcpy(psk, key->bytes.data(), key->bytes.size());
    return static_cast<unsigned>(key->bytes.size());
}

// In PSK mode a certificate proves nothing: a server without the secret may
// ignore the PSK and answer with one (TLS 1.3 allows it), so any certificate
// path fails here.
int refuse_any_certificate(int, X509_STORE_CTX* store) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

// The names a server's certificate held, kept with the SSL when it failed for
// naming another host: the sending agent says which, not just "verify failed".
void free_names(void*, void* names, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<std::string*>(names); }

int wrong_host_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_names);
    return index;
}

int remember_wrong_host(int ok, X509_STORE_CTX* store) {
    int error = X509_STORE_CTX_get_error(store);
    if (ok || (error != X509_V_ERR_HOSTNAME_MISMATCH && error != X509_V_ERR_IP_ADDRESS_MISMATCH)) return ok;
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    if (ssl && cert && !SSL_get_ex_data(ssl, wrong_host_index())) {
        auto names = std::make_unique<std::string>(certificate_names_text(cert));
        if (SSL_set_ex_data(ssl, wrong_host_index(), names.get())) names.release();
    }
    return 0;
}

// A secret file's text: 32 to 64 bytes in hex, as `rfork-agent keygen` writes it.
std::vector<unsigned char> parse_secret(std::string text, const std::string& what) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (text.size() % 2 != 0 || text.size() < 64 || text.size() > 128)
        throw std::runtime_error(fmt::format("{} must hold 32 to 64 bytes in hex (rfork-agent keygen makes one)", what));
    std::vector<unsigned char> secret;
    for (std::size_t i = 0; i < text.size(); i += 2) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(text.data() + i, text.data() + i + 2, value, 16);
        if (ec != std::errc{} || end != text.data() + i + 2) throw std::runtime_error(fmt::format("{} is not hex", what));
        secret.push_back(static_cast<unsigned char>(value));
    }
    OPENSSL_cleanse(text.data(), text.size());
    return secret;
}

std::string read_all(int fd) {
    std::string text(max_secret_text, '\0');
    auto n = ::read(fd, text.data(), text.size());
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return text;
}

std::vector<unsigned char> read_secret(const std::string& path) {
    return parse_secret(read_private_file(path, "--secret-file", max_secret_text), "--secret-file " + path);
}

// Random bytes in hex with a newline: the text of a secret file.
std::string new_secret_text() {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no randomness from OpenSSL");
    std::string hex;
    for (auto b : bytes) hex += fmt::format("{:02x}", b);
    OPENSSL_cleanse(bytes, sizeof bytes);
    return hex + '\n';
}

// Creates `path` with `text`, mode 0600, never over anything there (O_EXCL,
// O_NOFOLLOW). Returns errno, or 0.
int create_secret_file(const std::string& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return errno;
    bool ok = ::fchmod(fd, 0600) == 0 &&  // whatever the umask
              ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    int error = errno;
    ::close(fd);
    if (ok) return 0;
    ::unlink(path.c_str());
    return error ? error : EIO;
}

local_secret_refused refused(const std::string& path, const std::string& why) {
    auto fix = fmt::format("rm {} (the agent makes a new one when it starts)", path);
    return local_secret_refused(fmt::format("refusing the local secret {}: {}; it must be a regular file of root's "
                                            "that only root may read. Fix: {}, or give the agents credentials "
                                            "(--secret-file, or --cert, --key and --ca)",
                                            path, why, fix),
                                why, fix);
}

// Reads the local secret at `path`; nullopt when there is none.
std::optional<std::vector<unsigned char>> read_local_secret(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) return std::nullopt;
    if (fd < 0 && errno == ELOOP) throw refused(path, "it is a symbolic link");
    if (fd < 0) throw refused(path, fmt::format("cannot open it: {}", std::strerror(errno)));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_it{fd};
    // Checked on the open file: what is read is what was checked.
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw refused(path, fmt::format("cannot stat it: {}", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) throw refused(path, "it is not a regular file");
    if (st.st_uid != 0) throw refused(path, fmt::format("it belongs to uid {}, not root", st.st_uid));
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        throw refused(path, fmt::format("group or others may use it (mode {:04o})", st.st_mode & 07777));
    return parse_secret(read_all(fd), "the local secret " + path);
}

asio::ssl::context make_psk_context(std::vector<unsigned char> secret) {
    asio::ssl::context context(asio::ssl::context::tls);
    SSL_CTX* ctx = context.native_handle();
    // The PSK callbacks work with TLS 1.3 given a SHA-256 suite.
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256") != 1)
        throw std::runtime_error("OpenSSL cannot speak TLS 1.3 with the suites a shared secret needs");
    SSL_CTX_set_num_tickets(ctx, 0);  // no resumption: every connection proves the secret
    if (!SSL_CTX_set_ex_data(ctx, psk_index(), new psk_key{std::move(secret)}))
        throw std::runtime_error("OpenSSL could not keep the secret");
    SSL_CTX_set_psk_client_callback(ctx, client_psk);
    SSL_CTX_set_psk_server_callback(ctx, server_psk);
    // The PSK is the only authentication: as a server, this agent has no
    // certificate to offer (none is loaded) and asks for none; as a client,
    // see prepare_client_handshake.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return context;
}

}  // namespace

asio::ssl::context make_tls_context(const std::string& secret_file) {
    return make_psk_context(read_secret(secret_file));
}

std::string local_secret_path(const std::string& socket_path) {
    return (std::filesystem::path(socket_path).parent_path() / "local.secret").string();
}

asio::ssl::context make_local_tls_context(const std::string& path) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    for (int attempt = 0; attempt < 3; ++attempt) {
        if (auto secret = read_local_secret(path)) return make_psk_context(std::move(*secret));
        // None yet. Made under a name of its own, then linked into place: the
        // secret appears whole or not at all, and an agent beside this one
        // that got there first wins (link fails with EEXIST, we read theirs).
        auto text = new_secret_text();
        auto draft = fmt::format("{}.{}-{}", path, ::getpid(), new_secret_text().substr(0, 8));
        if (int error = create_secret_file(draft, text))
            throw std::runtime_error(fmt::format("cannot create the local secret {}: {}", draft, std::strerror(error)));
        int linked = ::link(draft.c_str(), path.c_str());
        int error = errno;
        ::unlink(draft.c_str());
        if (linked == 0) {
            auto secret = parse_secret(std::move(text), "the local secret " + path);
            return make_psk_context(std::move(secret));
        }
        if (error != EEXIST)
            throw std::runtime_error(fmt::format("cannot create the local secret {}: {}", path, std::strerror(error)));
    }
    throw std::runtime_error(fmt::format("cannot create the local secret {}: it keeps vanishing", path));
}

std::optional<asio::ssl::context> load_local_tls_context(const std::string& path) {
    auto secret = read_local_secret(path);
    if (!secret) return std::nullopt;
    return make_psk_context(std::move(*secret));
}

bool prepare_client_handshake(SSL* ssl, const std::string& host) {
    // Set on the client's SSL alone: on a server, SSL_VERIFY_PEER would make
    // OpenSSL demand a session id context for the PSK "resumption".
    if (psk_of(SSL_get_SSL_CTX(ssl))) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, refuse_any_certificate);
        return true;
    }
    // OpenSSL checks the name as part of the chain (subjectAltName only, see
    // make_tls_context), so a mismatch fails the handshake before a byte of
    // ours goes out. An address literal is set as an address: OpenSSL 3.0's
    // SSL_set1_host does so itself, but X509_VERIFY_PARAM_set1_host and
    // older OpenSSL would match it against DNS entries only.
    // A name is set as a name: SSL_set1_host would read "10.0.0.010" as the
    // address 10.0.0.10 where the resolver dials 10.0.0.8 (octal).
    bool set = is_address_literal(host)
                   ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1
                   : X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), host.c_str(), 0) == 1;
    SSL_set_verify(ssl, SSL_get_verify_mode(ssl), remember_wrong_host);
    return set;
}

std::optional<std::string> names_of_wrong_host(SSL* ssl) {
    auto* names = static_cast<const std::string*>(SSL_get_ex_data(ssl, wrong_host_index()));
    if (!names) return std::nullopt;
    return *names;
}

std::optional<std::string> origin_refused(SSL* ssl, const std::string& origin) {
    // With a secret, every holder is equal: the origin is unauthenticated.
    if (!ssl || psk_of(SSL_get_SSL_CTX(ssl))) return std::nullopt;
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (!cert) return "showed no certificate";
    if (certificate_names_host(cert, origin)) return std::nullopt;
    return fmt::format("claims to be {}, but its certificate names {}: an agent may claim only a name its "
                       "certificate holds",
                       origin, certificate_names_text(cert));
}

bool authenticated_as_required(SSL* ssl) {
    if (!psk_of(SSL_get_SSL_CTX(ssl))) return true;  // certificates: verified during the handshake
    // The server chose our PSK (TLS 1.3 counts that as a resumption) and showed no certificate.
    return SSL_session_reused(ssl) == 1 && SSL_get0_peer_certificate(ssl) == nullptr;
}

std::string write_new_secret(const std::string& path) {
    try {
        if (int error = create_secret_file(path, new_secret_text()))
            return fmt::format("cannot create {}: {}", path, std::strerror(error));
    } catch (const std::exception& e) {
        return e.what();
    }
    return {};
}

}  // namespace rfork::agent
