# The C code of the CRIU image formats that the image gate decodes, generated
# at build time by protoc-c from the .proto files of the CRIU that
# scripts/setup verified and built (it copies them to .deps/criu/proto).
# Nothing generated, and nothing of CRIU's, is kept in rfork's tree.
#   rfork_add_criu_images(TARGET PROTO_DIR): a static C library TARGET.

# The formats the gate reads (core, creds, ghost files), those the sending
# agent reads to learn the image's files (fdinfo, remap-file-path), and all
# they import, and the pagemaps whose lazy pages the sender streams.
set(RFORK_CRIU_PROTOS core core-x86 core-arm core-aarch64 core-ppc64 core-s390 core-mips core-loongarch64
  core-riscv64 rlimit timer creds sa siginfo rseq opts ghost-file time
  fdinfo remap-file-path regfile fown fh sk-inet sk-opts sk-unix sk-netlink packet-sock ns eventfd eventpoll
  signalfd tun timerfd fsnotify ext-file fifo pipe pidfd tty memfd bpfmap-file tcp-stream pagemap)

function(rfork_add_criu_images target proto_dir)
  foreach(name IN LISTS RFORK_CRIU_PROTOS)
    if(NOT EXISTS "${proto_dir}/${name}.proto")
      message(FATAL_ERROR "rfork: CRIU's image formats are missing (${proto_dir}/${name}.proto): "
        "run scripts/setup, which copies them from the CRIU source it verified")
    endif()
  endforeach()
  find_program(RFORK_PROTOC_C protoc-c)
  find_path(RFORK_PROTOBUF_C_INCLUDE protobuf-c/protobuf-c.h)
  find_library(RFORK_PROTOBUF_C_LIBRARY protobuf-c)
  # opts.proto extends protobuf's own descriptor.proto (libprotobuf-dev).
  find_path(RFORK_PROTOBUF_INCLUDE google/protobuf/descriptor.proto)
  if(NOT RFORK_PROTOC_C OR NOT RFORK_PROTOBUF_C_INCLUDE OR NOT RFORK_PROTOBUF_C_LIBRARY OR NOT RFORK_PROTOBUF_INCLUDE)
    message(FATAL_ERROR "rfork: protoc-c, protobuf-c or protobuf's descriptor.proto is missing: run scripts/setup")
  endif()

  set(out "${CMAKE_CURRENT_BINARY_DIR}/criu_images")
  set(inputs "${RFORK_PROTOBUF_INCLUDE}/google/protobuf/descriptor.proto")
  set(sources "${out}/google/protobuf/descriptor.pb-c.c")
  set(outputs ${sources} "${out}/google/protobuf/descriptor.pb-c.h")
  foreach(name IN LISTS RFORK_CRIU_PROTOS)
    list(APPEND inputs "${proto_dir}/${name}.proto")
    list(APPEND sources "${out}/${name}.pb-c.c")
    list(APPEND outputs "${out}/${name}.pb-c.c" "${out}/${name}.pb-c.h")
  endforeach()
  add_custom_command(OUTPUT ${outputs}
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${out}"
    COMMAND "${RFORK_PROTOC_C}" "--c_out=${out}" -I "${proto_dir}" -I "${RFORK_PROTOBUF_INCLUDE}" ${inputs}
    DEPENDS ${inputs}
    COMMENT "Generating C code of CRIU's image formats from ${proto_dir}")
  add_library(${target} STATIC ${sources})
  set_target_properties(${target} PROPERTIES LINKER_LANGUAGE C)
  # SYSTEM: the generated headers are not ours to keep warning-free.
  target_include_directories(${target} SYSTEM PUBLIC "${out}" "${RFORK_PROTOBUF_C_INCLUDE}")
  target_link_libraries(${target} PUBLIC "${RFORK_PROTOBUF_C_LIBRARY}")
endfunction()
