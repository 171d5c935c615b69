#include "peer_connection.hpp"

#include <fmt/core.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace rfork::agent {

namespace {

constexpr std::size_t max_key_text = 64 * 1024;  // a PEM key of any usual size

template <typename T, void (*Free)(T*)>
struct deleter {
    void operator()(T* p) const { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;

// Opens a new file in `dir_fd`, mode `mode`, never over an existing one nor through a link.
FILE* create(int dir_fd, const std::string& name, mode_t mode) {
    int fd = ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return nullptr;
    FILE* file = ::fdopen(fd, "w");
    if (!file) ::close(fd);
    return file;
}

// Writes DIR/BASE.key and DIR/BASE.crt, both new. DIR is opened without
// following a link, and the files are made in it (O_EXCL | O_NOFOLLOW): keygen
// writes nowhere a link leads. On failure neither file is left.
std::string write_pair(const std::string& dir, const std::string& base, EVP_PKEY* key, X509* cert) {
    int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) {
        int error = errno;
        struct stat st {};
        if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))  // O_DIRECTORY makes that ENOTDIR
            return fmt::format("{} is a symbolic link; give the directory it leads to instead", dir);
        return fmt::format("cannot open the directory {}: {}", dir, std::strerror(error));
    }
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_dir{dir_fd};
    auto key_name = base + ".key", cert_name = base + ".crt";
    FILE* k = create(dir_fd, key_name, 0600);
    if (!k) return fmt::format("cannot create {}/{}: {}", dir, key_name, std::strerror(errno));
    FILE* c = create(dir_fd, cert_name, 0644);
    if (!c) {
        auto error = fmt::format("cannot create {}/{}: {}", dir, cert_name, std::strerror(errno));
        std::fclose(k);
        ::unlinkat(dir_fd, key_name.c_str(), 0);
        return error;
    }
    bool ok = PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    ok = PEM_write_X509(c, cert) == 1 && ok;
    ok = std::fclose(k) == 0 && ok;
    ok = std::fclose(c) == 0 && ok;
    if (ok) return {};
    ::unlinkat(dir_fd, key_name.c_str(), 0);
    ::unlinkat(dir_fd, cert_name.c_str(), 0);
    return fmt::format("cannot write {}/{} and {}", dir, key_name, cert_name);
}

// A host name as DNS spells one, which names files in OUT: ASCII letters,
// digits, '-' and '.', not starting with '.' or '-', no "..", at most 253.
bool plain_host_name(const std::string& name) {
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-') return false;
    if (name.find("..") != std::string::npos) return false;
    return std::all_of(name.begin(), name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
               ch == '.';
    });
}

// A P-256 key and a certificate for it, signed by `issuer_key` (itself when null).
std::pair<pkey_ptr, x509_ptr> issue(const std::string& common_name, bool authority, EVP_PKEY* issuer_key,
                                    X509* issuer) {
    pkey_ptr key(EVP_EC_gen("P-256"));
    x509_ptr cert(X509_new());
    if (!key || !cert) throw std::runtime_error("OpenSSL could not make a key");
    X509_set_version(cert.get(), 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                               -1, -1, 0);
    X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
    const char* constraints = authority ? "critical,CA:TRUE" : "critical,CA:FALSE";
    const char* usage = authority ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature";
    for (auto [nid, value] : {std::pair{NID_basic_constraints, constraints}, std::pair{NID_key_usage, usage}}) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!authority) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (X509_sign(cert.get(), issuer_key ? issuer_key : key.get(), EVP_sha256()) == 0)
        throw std::runtime_error("OpenSSL could not sign the certificate");
    return {std::move(key), std::move(cert)};
}

}  // namespace

std::string make_ca(const std::string& dir) {
    try {
        auto [key, cert] = issue("rfork agents' certificate authority", true, nullptr, nullptr);
        return write_pair(dir, "ca", key.get(), cert.get());
    } catch (const std::exception& e) {
        return e.what();
    }
}

std::string make_host_certificate(const std::string& name, const std::string& ca_dir, const std::string& out_dir) {
    if (!plain_host_name(name))
        return fmt::format("--host {} is not a plain host name: it names the files OUT/NAME.key and OUT/NAME.crt, "
                           "so it may hold only letters, digits, '-' and '.' (at most 253, not starting with '.' or "
                           "'-', no \"..\")",
                           name);
    FILE* k = std::fopen((ca_dir + "/ca.key").c_str(), "r");
    FILE* c = std::fopen((ca_dir + "/ca.crt").c_str(), "r");
    pkey_ptr ca_key(k ? PEM_read_PrivateKey(k, nullptr, nullptr, nullptr) : nullptr);
    x509_ptr ca_cert(c ? PEM_read_X509(c, nullptr, nullptr, nullptr) : nullptr);
    if (k) std::fclose(k);
    if (c) std::fclose(c);
    if (!ca_key || !ca_cert) return fmt::format("cannot read {}/ca.key and {}/ca.crt", ca_dir, ca_dir);
    try {
        auto [key, cert] = issue(name, false, ca_key.get(), ca_cert.get());
        return write_pair(out_dir, name, key.get(), cert.get());
    } catch (const std::exception& e) {
        return e.what();
    }
}

asio::ssl::context make_tls_context(const std::string& cert, const std::string& key, const std::string& ca) {
    asio::ssl::context context(asio::ssl::context::tls);
    SSL_CTX* ctx = context.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    std::error_code ec;
    context.use_certificate_chain_file(cert, ec);
    if (!ec) {
        // Loaded from the text that was checked, not from the path again.
        auto pem = read_private_file(key, "--key", max_key_text);
        context.use_private_key(asio::buffer(pem), asio::ssl::context::pem, ec);
        OPENSSL_cleanse(pem.data(), pem.size());
    }
    if (!ec) context.load_verify_file(ca, ec);
    if (ec) throw std::runtime_error(fmt::format("cannot load --cert {}, --key {} and --ca {}: {}", cert, key, ca, ec.message()));
    // Both sides present a certificate, and both insist on one the CA signed.
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return context;
}

}  // namespace rfork::agent
