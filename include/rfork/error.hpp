// rfork's error codes: one enum, one category, usable as std::error_code.
#pragma once

#include <string>
#include <system_error>

namespace rfork {

enum class errc {
    // What a caller of fork_remote meets.
    bad_endpoint = 1,       // the endpoint is not "host:port"
    agent_not_found,        // no local agent answers at the socket path
    agent_lost,             // the local agent closed the connection before answering
    agent_unreachable,      // the remote agent cannot be reached
    dump_failed,            // CRIU could not checkpoint the caller
    transfer_failed,        // the image did not reach the remote agent whole
    restore_failed,         // CRIU could not restore the image on the remote host
    not_permitted,          // the agent refused the request
    internal_error,         // the agent failed for a reason of its own
    no_such_child,          // wait or kill for a child the agent does not know
    not_a_parent,           // wait or kill called on the child's side of a fork
    timed_out,              // a peer did not send in time (the agents' timeouts)
    limit_exceeded,         // the request is over one of the receiving agent's limits
    file_unavailable,       // a file the process uses cannot be given to its child there

    // What a malformed or foreign peer causes (see protocol.hpp).
    bad_magic = 64,         // the stream is not rfork's protocol
    unsupported_version,    // the peer speaks another protocol version
    unknown_role,           // the handshake names no known role
    unexpected_role,        // a known role, but not one this side accepts here
    bad_header,             // reserved handshake or frame bits are set
    bad_checksum,           // a handshake or frame failed its CRC-32C
    frame_too_large,        // a frame announces more than the receiver's limit
    truncated,              // the stream ended inside a handshake or frame
    malformed_message,      // a frame's payload does not decode as its type
    unexpected_message,     // a valid frame of a type not expected here
};

namespace detail {

class error_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "rfork"; }

    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
        case errc::bad_endpoint: return "bad endpoint (expected host:port)";
        case errc::agent_not_found: return "no rfork agent at the local socket";
        case errc::agent_lost: return "the local rfork agent closed the connection before answering";
        case errc::agent_unreachable: return "the remote rfork agent is unreachable";
        case errc::dump_failed: return "CRIU could not checkpoint the process";
        case errc::transfer_failed: return "the image did not reach the remote agent";
        case errc::restore_failed: return "CRIU could not restore the process on the remote host";
        case errc::not_permitted: return "the rfork agent refused the request";
        case errc::internal_error: return "internal error in the rfork agent";
        case errc::no_such_child: return "no such child";
        case errc::not_a_parent: return "only the parent can wait for or signal its child";
        case errc::timed_out: return "timed out";
        case errc::limit_exceeded: return "over a limit of the rfork agent";
        case errc::file_unavailable: return "a file the process uses cannot be given to its child on the remote host";
        case errc::bad_magic: return "not the rfork protocol (bad magic)";
        case errc::unsupported_version: return "unsupported rfork protocol version";
        case errc::unknown_role: return "unknown role in the rfork handshake";
        case errc::unexpected_role: return "role not accepted here";
        case errc::bad_header: return "reserved bits set in an rfork header";
        case errc::bad_checksum: return "checksum mismatch";
        case errc::frame_too_large: return "frame larger than allowed";
        case errc::truncated: return "stream ended inside a message";
        case errc::malformed_message: return "malformed message";
        case errc::unexpected_message: return "unexpected message";
        }
        return "unknown rfork error";
    }
};

}  // namespace detail

inline const std::error_category& category() noexcept {
    static const detail::error_category instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), category()};
}

}  // namespace rfork

template <>
struct std::is_error_code_enum<rfork::errc> : std::true_type {};
