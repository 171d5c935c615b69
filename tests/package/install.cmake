# Installs an rfork build tree into a fresh prefix and checks what landed there.
#
#   cmake -DBUILD_DIR=<build tree> -DSOURCE_DIR=<rfork sources> -DPREFIX=<dir>
#         [-DCONFIG=<config>] [-DBUILD_TARGET=<target to build first>]
#         -P install.cmake
cmake_minimum_required(VERSION 3.20)

foreach(var BUILD_DIR SOURCE_DIR PREFIX)
  if(NOT ${var})
    message(FATAL_ERROR "install.cmake: ${var} is not set")
  endif()
endforeach()

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

# `cmake --install` installs every install() rule of the tree, rfork-agent
# included, and fails on a target that was never built.
if(BUILD_TARGET)
  execute_process(
    COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${BUILD_TARGET}" ${config_args}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install.cmake: building ${BUILD_TARGET} failed (${rc})")
  endif()
endif()

# A fresh prefix: no file of an earlier run may satisfy the consumer.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${config_args}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install.cmake: cmake --install failed (${rc})")
endif()

# The package files find_package(rfork) reads.
foreach(file
    share/cmake/rfork/rfork-config.cmake
    share/cmake/rfork/rfork-config-version.cmake
    share/cmake/rfork/rfork-targets.cmake
    share/cmake/rfork/Findasio.cmake)
  if(NOT EXISTS "${PREFIX}/${file}")
    message(FATAL_ERROR "install.cmake: ${PREFIX}/${file} was not installed")
  endif()
endforeach()

# Every public header, and nothing but them, under include/rfork.
file(GLOB_RECURSE source_headers RELATIVE "${SOURCE_DIR}/include" "${SOURCE_DIR}/include/rfork/*")
file(GLOB_RECURSE installed_headers RELATIVE "${PREFIX}/include" "${PREFIX}/include/*")
list(SORT source_headers)
list(SORT installed_headers)
if(NOT source_headers STREQUAL installed_headers)
  message(FATAL_ERROR "install.cmake: installed headers differ from include/rfork\n"
                      "  sources:   ${source_headers}\n"
                      "  installed: ${installed_headers}")
endif()
list(LENGTH installed_headers count)
message(STATUS "install.cmake: rfork installed into ${PREFIX} (${count} headers)")
