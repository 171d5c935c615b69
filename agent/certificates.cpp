#include "peer_connection.hpp"

#include <fmt/core.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace rfork::agent {

namespace {

template <typename T, void (*Free)(T*)>
struct deleter {
    void operator()(T* p) const { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;

// Opens a new file, mode `mode`, never over an existing one.
FILE* create(const std::string& path, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    return fd < 0 ? nullptr : ::fdopen(fd, "w");
}

std::string write_pair(const std::string& base, EVP_PKEY* key, X509* cert) {
    FILE* k = create(base + ".key", 0600);
    if (!k) return fmt::format("cannot create {}.key: {}", base, std::strerror(errno));
    bool ok = PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    std::fclose(k);
    FILE* c = create(base + ".crt", 0644);
    if (!c) return fmt::format("cannot create {}.crt: {}", base, std::strerror(errno));
    ok = ok && PEM_write_X509(c, cert) == 1;
    std::fclose(c);
    return ok ? std::string{} : fmt::format("cannot write {}.key/.crt", base);
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
        return write_pair(dir + "/ca", key.get(), cert.get());
    } catch (const std::exception& e) {
        return e.what();
    }
}

std::string make_host_certificate(const std::string& name, const std::string& ca_dir, const std::string& out_dir) {
    FILE* k = std::fopen((ca_dir + "/ca.key").c_str(), "r");
    FILE* c = std::fopen((ca_dir + "/ca.crt").c_str(), "r");
    pkey_ptr ca_key(k ? PEM_read_PrivateKey(k, nullptr, nullptr, nullptr) : nullptr);
    x509_ptr ca_cert(c ? PEM_read_X509(c, nullptr, nullptr, nullptr) : nullptr);
    if (k) std::fclose(k);
    if (c) std::fclose(c);
    if (!ca_key || !ca_cert) return fmt::format("cannot read {}/ca.key and {}/ca.crt", ca_dir, ca_dir);
    try {
        auto [key, cert] = issue(name, false, ca_key.get(), ca_cert.get());
        return write_pair(out_dir + "/" + name, key.get(), cert.get());
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
    if (!ec) context.use_private_key_file(key, asio::ssl::context::pem, ec);
    if (!ec) context.load_verify_file(ca, ec);
    if (ec) throw std::runtime_error(fmt::format("cannot load --cert {}, --key {} and --ca {}: {}", cert, key, ca, ec.message()));
    // Both sides present a certificate, and both insist on one the CA signed.
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return context;
}

}  // namespace rfork::agent
