# Busted specs, one ctest entry per group. They run under the stock lua5.4
# interpreter and load the freshly built glisten.so through GLISTEN_BUILD.
find_program(LUA54 NAMES lua5.4 REQUIRED)
find_program(BUSTED NAMES busted REQUIRED)

set(GLISTEN_SPECS
  contract
  socket
  module
  cli
  faults
  scripts
  workers
  shared)

# Under the sanitizers the stock interpreter loads an instrumented module, so
# the sanitizer runtimes must be loaded first.
set(GLISTEN_SPEC_ENV "GLISTEN_BUILD=${CMAKE_BINARY_DIR}")
if(GLISTEN_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
    OUTPUT_VARIABLE ASAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
    OUTPUT_VARIABLE UBSAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
  list(APPEND GLISTEN_SPEC_ENV "LD_PRELOAD=${ASAN_LIB}:${UBSAN_LIB}"
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endif()

foreach(spec ${GLISTEN_SPECS})
  add_test(NAME spec_${spec}
    COMMAND ${LUA54} ${BUSTED} --helper=spec/helper.lua
            --output=utfTerminal spec/${spec}_spec.lua
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(spec_${spec} PROPERTIES
    ENVIRONMENT "${GLISTEN_SPEC_ENV}"
    TIMEOUT 300)
endforeach()
