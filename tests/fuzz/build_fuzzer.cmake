# Configures and builds the fuzz project with clang, and lays out a fresh
# working corpus from the seeds (libFuzzer adds to the corpus it is given).
if(NOT CLANGXX)
  message(FATAL_ERROR "clang++ not found: run scripts/setup (it installs clang and libclang-rt-14-dev)")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BUILD} -DCMAKE_CXX_COMPILER=${CLANGXX}
                        -DRFORK_INCLUDE_DIR=${INCLUDE} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the fuzz target failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the fuzz target failed")
endif()
file(REMOVE_RECURSE ${CORPUS})
file(COPY ${SEEDS}/ DESTINATION ${CORPUS})
