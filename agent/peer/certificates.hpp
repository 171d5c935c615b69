// Certificates: the agents' TLS context in certificate mode, `rfork-agent
// keygen`'s authority and host certificates, and the names a certificate holds.
#pragma once

#include <asio/ssl/context.hpp>

#include <openssl/x509.h>

#include <string>
#include <vector>

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
