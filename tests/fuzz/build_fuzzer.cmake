# Configures and builds the fuzz project with clang, and lays out a fresh
# working corpus from the seeds (libFuzzer adds to the corpus it is given).
if(NOT CLANGXX)
  message(FATAL_ERROR "clang++ not found: run scripts/setup (it installs clang and libclang-rt-14-dev)")
endif()
# With CRIU_PROTO_DIR (and AGENT_DIR), also the image gate's target.
string(REPLACE "clang++" "clang" clangc "${CLANGXX}")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BUILD} -DCMAKE_CXX_COMPILER=${CLANGXX}
                        -DCMAKE_C_COMPILER=${clangc} -DRFORK_INCLUDE_DIR=${INCLUDE}
                        -DRFORK_CRIU_PROTO_DIR=${CRIU_PROTO_DIR} -DRFORK_AGENT_DIR=${AGENT_DIR} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the fuzz target failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the fuzz target failed")
endif()
file(REMOVE_RECURSE ${CORPUS})
file(COPY ${SEEDS}/ DESTINATION ${CORPUS})
if(IMAGE_SEEDS)
  file(REMOVE_RECURSE ${IMAGE_CORPUS})
  file(COPY ${IMAGE_SEEDS}/ DESTINATION ${IMAGE_CORPUS})
endif()
