# The Debian package for the agent's machines (`scripts/package`, CPack):
# rfork-agent, the CRIU it ships when the system's cannot run (libexec/rfork),
# its systemd unit and a default /etc/rfork/agent.conf. Headers and the CMake
# package stay with `cmake --install` (component "development").
set(CPACK_GENERATOR DEB)
# Installed under /usr, staged through DESTDIR: install(CODE) rules then see
# the real prefix (the unit names /usr/bin/rfork-agent, the options go to /etc).
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_NAME rfork)
set(CPACK_PACKAGE_VENDOR "rfork")
set(CPACK_PACKAGE_CONTACT "rfork developers <rfork@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL agent)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_AGENT_PACKAGE_NAME rfork-agent)
set(CPACK_DEBIAN_AGENT_PACKAGE_SECTION admin)
set(CPACK_COMPONENT_AGENT_DESCRIPTION "Receives processes that other machines' agents fork here and restores them,
and forks this machine's programs (rfork::fork_remote) to other agents.")
set(CPACK_STRIP_FILES ON)
# The libraries of rfork-agent and of the CRIU beside it, as dpkg-shlibdeps
# finds them; nsenter (util-linux) is essential on Debian.
set(CPACK_DEBIAN_AGENT_PACKAGE_SHLIBDEPS ON)
if(NOT RFORK_CRIU)
  set(CPACK_DEBIAN_AGENT_PACKAGE_DEPENDS "criu (>= ${RFORK_CRIU_MINIMUM})")
endif()

set(CPACK_DEBIAN_AGENT_PACKAGE_CONTROL_EXTRA
  "${PROJECT_SOURCE_DIR}/packaging/conffiles"
  "${PROJECT_SOURCE_DIR}/packaging/postinst"
  "${PROJECT_SOURCE_DIR}/packaging/prerm"
  "${PROJECT_SOURCE_DIR}/packaging/postrm")
set(CPACK_DEBIAN_AGENT_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
