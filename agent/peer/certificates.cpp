#include "peer/certificates.hpp"
#include "peer/tls.hpp"

#include <fmt/core.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>
#include <vector>

namespace rfork::agent {

namespace {

constexpr std::size_t max_key_text = 64 * 1024;  // a PEM key of any usual size
// subjectAltName alone names a host (never the CN), and a wildcard only as a whole label.
constexpr unsigned host_check_flags = X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

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

// Host names are checked against subjectAltName only (never the CN), as
// RFC 6125 asks: DNS:NAME, or IP:NAME for an address literal.
bool add_subject_alt_names(X509* cert, const std::vector<std::string>& names) {
    GENERAL_NAMES* all = sk_GENERAL_NAME_new_null();
    bool ok = all != nullptr;
    for (std::size_t i = 0; ok && i < names.size(); ++i) {
        GENERAL_NAME* entry = GENERAL_NAME_new();
        if (!entry) {
            ok = false;
            break;
        }
        if (is_address_literal(names[i])) {
            ASN1_OCTET_STRING* address = a2i_IPADDRESS(names[i].c_str());
            ok = address != nullptr;
            if (ok) GENERAL_NAME_set0_value(entry, GEN_IPADD, address);
        } else {
            ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
            ok = dns && ASN1_STRING_set(dns, names[i].data(), static_cast<int>(names[i].size())) == 1;
            if (ok) GENERAL_NAME_set0_value(entry, GEN_DNS, dns);
            else ASN1_IA5STRING_free(dns);
        }
        if (ok && sk_GENERAL_NAME_push(all, entry) > 0) continue;
        GENERAL_NAME_free(entry);
        ok = false;
    }
    ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, all, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(all);
    return ok;
}

// Keygen stops with a clear message at the first OpenSSL call that fails.
void need(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(fmt::format("OpenSSL could not {}", what));
}

void add_extension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
    bool added = ext && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    need(added, "add an extension to the certificate");
}

// A P-256 key and a certificate for it, signed by `issuer_key` (itself when
// null); a host's names `names` (its CN is the first).
std::pair<pkey_ptr, x509_ptr> issue(const std::string& common_name, bool authority, EVP_PKEY* issuer_key,
                                    X509* issuer, const std::vector<std::string>& names = {}) {
    pkey_ptr key(EVP_EC_gen("P-256"));
    x509_ptr cert(X509_new());
    if (!key || !cert) throw std::runtime_error("OpenSSL could not make a key");
    need(X509_set_version(cert.get(), 2) == 1, "set the certificate's version");
    unsigned char serial[16];
    need(RAND_bytes(serial, sizeof serial) == 1, "make a serial number (no randomness)");
    serial[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    bool numbered = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr;
    BN_free(bn);
    need(numbered, "set the serial number");
    need(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) &&
             X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600),
         "set the certificate's validity");
    need(X509_set_pubkey(cert.get(), key.get()) == 1, "put the key in the certificate");
    X509_NAME* name = X509_get_subject_name(cert.get());
    need(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0) == 1,
         "name the certificate");
    need(X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name) == 1,
         "name the certificate's issuer");
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
    const char* constraints = authority ? "critical,CA:TRUE" : "critical,CA:FALSE";
    const char* usage = authority ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature";
    add_extension(cert.get(), &ctx, NID_basic_constraints, constraints);
    add_extension(cert.get(), &ctx, NID_key_usage, usage);
    if (!authority) {
        add_extension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
        if (!add_subject_alt_names(cert.get(), names)) throw std::runtime_error("OpenSSL could not name the hosts");
    }
    if (X509_sign(cert.get(), issuer_key ? issuer_key : key.get(), EVP_sha256()) == 0)
        throw std::runtime_error("OpenSSL could not sign the certificate");
    return {std::move(key), std::move(cert)};
}

// Why `names` cannot make a host's certificate, or empty.
std::string check_host_names(const std::vector<std::string>& names) {
    if (names.empty()) return "--host NAME is needed";
    if (!plain_host_name(names.front()))
        return fmt::format("--host {} is not a plain host name: the first --host names the files OUT/NAME.key and "
                           "OUT/NAME.crt, so it may hold only letters, digits, '-' and '.' (at most 253, not starting "
                           "with '.' or '-', no \"..\"){}",
                           names.front(),
                           is_address_literal(names.front()) ? "; give a name first and the address after it "
                                                               "(--host NAME --host ADDRESS)"
                                                             : "");
    std::set<std::string> seen;
    for (auto& name : names) {
        if (!plain_host_name(name) && !is_address_literal(name))
            return fmt::format("--host {} is neither a plain host name (letters, digits, '-' and '.') nor an IP "
                               "address",
                               name);
        if (!seen.insert(name).second) return fmt::format("--host {} is given twice", name);
    }
    return {};
}

std::string print_address(const ASN1_OCTET_STRING* address) {
    char text[INET6_ADDRSTRLEN] = "";
    int length = ASN1_STRING_length(address);
    const unsigned char* bytes = ASN1_STRING_get0_data(address);
    if (length == 4) ::inet_ntop(AF_INET, bytes, text, sizeof text);
    else if (length == 16) ::inet_ntop(AF_INET6, bytes, text, sizeof text);
    return text[0] ? text : "(an address of " + std::to_string(length) + " bytes)";
}

}  // namespace

bool is_address_literal(const std::string& name) {
    unsigned char bytes[16];
    return ::inet_pton(AF_INET, name.c_str(), bytes) == 1 || ::inet_pton(AF_INET6, name.c_str(), bytes) == 1;
}

std::vector<std::string> certificate_names(X509* cert) {
    std::vector<std::string> names;
    auto* all = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    if (!all) return names;
    for (int i = 0; i < sk_GENERAL_NAME_num(all); ++i) {
        const GENERAL_NAME* entry = sk_GENERAL_NAME_value(all, i);
        if (entry->type == GEN_DNS) {
            auto* dns = entry->d.dNSName;
            names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                               static_cast<std::size_t>(ASN1_STRING_length(dns)));
        } else if (entry->type == GEN_IPADD) {
            names.push_back(print_address(entry->d.iPAddress));
        }
    }
    GENERAL_NAMES_free(all);
    return names;
}

std::string certificate_names_text(X509* cert) {
    std::string text;
    for (auto& name : certificate_names(cert)) text += (text.empty() ? "" : ", ") + name;
    return text.empty() ? "no host" : text;
}

bool certificate_names_host(X509* cert, const std::string& host) {
    if (host.empty() || host.find('\0') != std::string::npos) return false;
    if (is_address_literal(host)) return X509_check_ip_asc(cert, host.c_str(), 0) == 1;
    return X509_check_host(cert, host.data(), host.size(), host_check_flags, nullptr) == 1;
}

std::string make_ca(const std::string& dir) {
    try {
        auto [key, cert] = issue("rfork agents' certificate authority", true, nullptr, nullptr);
        return write_pair(dir, "ca", key.get(), cert.get());
    } catch (const std::exception& e) {
        return e.what();
    }
}

std::string make_host_certificate(const std::vector<std::string>& names, const std::string& ca_dir,
                                  const std::string& out_dir) {
    if (auto wrong = check_host_names(names); !wrong.empty()) return wrong;
    const auto& name = names.front();
    FILE* k = std::fopen((ca_dir + "/ca.key").c_str(), "r");
    FILE* c = std::fopen((ca_dir + "/ca.crt").c_str(), "r");
    pkey_ptr ca_key(k ? PEM_read_PrivateKey(k, nullptr, nullptr, nullptr) : nullptr);
    x509_ptr ca_cert(c ? PEM_read_X509(c, nullptr, nullptr, nullptr) : nullptr);
    if (k) std::fclose(k);
    if (c) std::fclose(c);
    if (!ca_key || !ca_cert) return fmt::format("cannot read {}/ca.key and {}/ca.crt", ca_dir, ca_dir);
    try {
        auto [key, cert] = issue(name, false, ca_key.get(), ca_cert.get(), names);
        return write_pair(out_dir, name, key.get(), cert.get());
    } catch (const std::exception& e) {
        return e.what();
    }
}

asio::ssl::context make_tls_context(const std::string& cert, const std::string& key, const std::string& ca) {
    asio::ssl::context context(asio::ssl::context::tls);
    SSL_CTX* ctx = context.native_handle();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
        throw std::runtime_error("OpenSSL cannot speak TLS 1.3");
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
    // Peers check this agent's names (the host they dialed, the origin it
    // claims) against its subjectAltName: a certificate without one is of no use.
    if (certificate_names(SSL_CTX_get0_certificate(ctx)).empty())
        throw std::runtime_error(fmt::format(
            "--cert {} names no host (it has no subjectAltName: an older rfork-agent keygen made it), and agents now "
            "accept only a certificate that names the host they reach. Fix: make it again with rfork-agent keygen "
            "--host NAME [--host ADDRESS ...] --ca DIR OUT, NAME being this host's name as its peers dial it",
            cert));
    // Names are matched against subjectAltName alone, never the CN (returns nothing to check).
    X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx), host_check_flags);
    // Both sides present a certificate, and both insist on one the CA signed.
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return context;
}

}  // namespace rfork::agent
