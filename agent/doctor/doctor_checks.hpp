// The checks of rfork-agent doctor, each a small function that returns what
// it found; doctor.cpp runs them and prints every result the same way.
#pragma once

#include "common/options.hpp"

#include <rfork/endpoint.hpp>

#include <asio/ssl/context.hpp>

#include <optional>
#include <string>
#include <vector>

namespace rfork::agent {

enum class check_status { ok, warn, fail };

struct check_result {
    check_status status = check_status::ok;
    std::string what;  // what was checked, e.g. "CRIU version"
    std::string why;   // what was found: the detail of an ok, the reason of a failure
    std::string fix;   // the command or change that fixes a failure or a warning
};

inline check_result passed(std::string what, std::string detail = {}) {
    return {check_status::ok, std::move(what), std::move(detail), {}};
}
inline check_result failed(std::string what, std::string why, std::string fix) {
    return {check_status::fail, std::move(what), std::move(why), std::move(fix)};
}
inline check_result warned(std::string what, std::string why, std::string fix) {
    return {check_status::warn, std::move(what), std::move(why), std::move(fix)};
}

// doctor_host.cpp: this host, apart from CRIU.
check_result check_root();
check_result check_pidfd();
check_result check_run_tmpfs();
// Whether children can get cgroups of their own (child_cgroup.hpp), looked
// for from doctor's own cgroup: the service's may differ (Delegate=).
check_result check_child_cgroups(const options& opts);
// A directory the agent creates; `option` moves it, e.g. "work-dir DIR".
check_result check_directory(const std::string& what, const std::string& dir, const std::string& option);

// doctor_criu.cpp: CRIU as the agent would find it (`criu` gets its path),
// and the kernel features it needs, asked of CRIU itself.
check_result check_criu_found(const options& opts, const std::string& self_exe, std::string& criu);
check_result check_criu_version(const std::string& criu);
check_result check_criu_check(const std::string& criu);
check_result check_userfaultfd(const std::string& criu);
check_result check_clone3_set_tid(const std::string& criu);
check_result check_network_lock(const std::string& criu);
// Lazy pages as the agent would take them (lazy_pages_problem in criu.hpp).
check_result check_lazy_pages(const options& opts);

// doctor_credentials.cpp: the credentials configured, their files, and
// whether they load; `tls` gets the context when they do.
std::vector<check_result> check_credentials(const options& opts, std::optional<asio::ssl::context>& tls);

// doctor_network.cpp: the listen address, and a probe of each peer.
check_result check_listen(const options& opts);
check_result check_peer(const options& opts, asio::ssl::context* tls, const endpoint& peer);

}  // namespace rfork::agent
