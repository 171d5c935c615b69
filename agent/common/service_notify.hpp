// Telling systemd that the agent is ready (Type=notify in rfork-agent.service),
// without linking libsystemd: one datagram to $NOTIFY_SOCKET.
#pragma once

#include <string>

namespace rfork::agent {

// Sends `state` (e.g. "READY=1") to the socket named by $NOTIFY_SOCKET, if
// the service manager set it. Returns an error message, or empty when sent or
// when there is no service manager to tell.
std::string notify_service_manager(const std::string& state);

}  // namespace rfork::agent
