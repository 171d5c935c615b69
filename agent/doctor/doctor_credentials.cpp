// Doctor's checks of the agent's credentials: configured, safe, loadable.
#include "doctor/doctor_checks.hpp"

#include "peer/certificates.hpp"
#include "peer/tls.hpp"

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rfork::agent {

namespace {

constexpr const char* keygen_secret = "rfork-agent keygen /etc/rfork/secret";

// A file of the credentials: there, root's, and private when it is a secret or a key.
check_result check_file(const std::string& what, const std::string& path, bool is_private,
                        const std::string& make_one) {
    auto title = fmt::format("{} {}", what, path);
    struct stat st {};
    if (is_private) {
        // As the agent reads it: not through a link, checked on the open file.
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 && errno == ELOOP)
            return failed(title, "a symbolic link: the agent refuses it",
                          fmt::format("put the file itself there, then chown root {} and chmod 600 {}", path, path));
        if (fd < 0) return failed(title, std::strerror(errno), make_one);
        int stat_result = ::fstat(fd, &st);
        int error = errno;
        ::close(fd);
        if (stat_result != 0) return failed(title, std::strerror(error), make_one);
    } else if (::stat(path.c_str(), &st) != 0) {
        return failed(title, std::strerror(errno), make_one);
    }
    if (!S_ISREG(st.st_mode)) return failed(title, "not a regular file", make_one);
    if (st.st_uid != 0)
        return failed(title, fmt::format("belongs to uid {}, not root", st.st_uid), "chown root " + path);
    auto mode = fmt::format("{:04o}", st.st_mode & 07777);
    // The agent refuses a secret with any permission for group or others.
    if (is_private && (st.st_mode & (S_IRWXG | S_IRWXO)))
        return failed(title, fmt::format("group or others may read or write it (mode {})", mode), "chmod 600 " + path);
    return passed(title, fmt::format("root's, mode {}", mode));
}

// Without credentials the agent listens on loopback only (options refuse
// more), authenticated by its host's own secret, which it makes at start.
std::vector<check_result> check_local_secret(const options& opts, std::optional<asio::ssl::context>& tls) {
    auto path = local_secret_path(opts.socket_path);
    std::vector<check_result> results;
    results.push_back(warned("credentials",
                             fmt::format("none configured: the agent listens on {} only, where agents must prove "
                                         "this host's own secret: it forks only to and from agents of this host",
                                         opts.listen.to_string()),
                             fmt::format("to fork between machines: {}, copy it to every machine, then secret-file "
                                         "/etc/rfork/secret",
                                         keygen_secret)));
    auto what = fmt::format("local secret {}", path);
    try {
        tls = load_local_tls_context(path);
        results.push_back(passed(what, tls ? "root's and private: TLS 1.3 with it"
                                           : "none yet: the agent makes it when it starts (mode 0600)"));
    } catch (const local_secret_refused& e) {
        results.push_back(failed(what, e.why, e.fix));
    } catch (const std::exception& e) {
        results.push_back(failed(what, e.what(), fmt::format("rm {} (the agent makes a new one when it starts)", path)));
    }
    return results;
}

// Peers dial this host by a name its certificate must hold, and refuse an
// origin (--name) it does not hold.
check_result check_certificate_names(const options& opts, asio::ssl::context& tls) {
    X509* own = SSL_CTX_get0_certificate(tls.native_handle());
    auto all = certificate_names_text(own);
    if (!opts.name.empty() && !certificate_names_host(own, opts.name))
        return failed("certificate names", fmt::format("{}, not --name {}: the agent refuses to start", all, opts.name),
                      fmt::format("name set to one of those, or a certificate for it: rfork-agent keygen --host {} "
                                  "--ca DIR OUT",
                                  opts.name));
    return passed("certificate names", fmt::format("{}: peers must dial this host by one of them", all));
}

}  // namespace

std::vector<check_result> check_credentials(const options& opts, std::optional<asio::ssl::context>& tls) {
    std::vector<check_result> results;
    if (opts.secret_file.empty() && opts.cert.empty()) return check_local_secret(opts, tls);
    bool secret = !opts.secret_file.empty();
    if (secret) {
        results.push_back(check_file("secret file", opts.secret_file, true,
                                     fmt::format("copy the secret of the other machines to {} (mode 0600), or make "
                                                 "a new one: rfork-agent keygen {}",
                                                 opts.secret_file, opts.secret_file)));
    } else {
        auto make_cert = "rfork-agent keygen --host NAME --ca DIR OUT makes a host's certificate and key";
        results.push_back(check_file("certificate", opts.cert, false, make_cert));
        results.push_back(check_file("key", opts.key, true, make_cert));
        results.push_back(check_file("authority", opts.ca, false,
                                     "copy the authority's ca.crt there (rfork-agent keygen --ca DIR made it)"));
    }
    for (auto& r : results)
        if (r.status != check_status::ok) return results;  // loading would only repeat why
    try {
        tls.emplace(secret ? make_tls_context(opts.secret_file) : make_tls_context(opts.cert, opts.key, opts.ca));
        results.push_back(passed("credentials load", secret ? "TLS 1.3 with the shared secret"
                                                            : "TLS 1.3 with certificates of one authority"));
        if (!secret) results.push_back(check_certificate_names(opts, *tls));
    } catch (const std::exception& e) {
        results.push_back(failed("credentials load", e.what(),
                                 secret ? fmt::format("copy the cluster's secret to {} again (only if the whole "
                                                      "cluster takes a new one: rfork-agent keygen)",
                                                      opts.secret_file)
                                        : "rfork-agent keygen --host NAME --ca DIR OUT makes a matching certificate "
                                          "and key"));
    }
    return results;
}

}  // namespace rfork::agent
