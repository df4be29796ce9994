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
  shared
  runaway
  unix
  addresses
  tlsclient
  tls
  proxy

  sendfile
  resp
  http
  memcached
  proxy_script
  packet)

# Under the sanitizers the stock interpreter loads an instrumented module, so
# the sanitizer runtimes must be loaded first.
set(GLISTEN_SPEC_ENV "GLISTEN_BUILD=${CMAKE_BINARY_DIR}" "GLISTEN_LUA=${LUA54}"
  "GLISTEN_BUSTED=${BUSTED}")
if(GLISTEN_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
    OUTPUT_VARIABLE ASAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
    OUTPUT_VARIABLE UBSAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
  # spec/run sets LD_PRELOAD for lua5.4 alone: its own tools (mktemp, grep)
  # are not instrumented, and LeakSanitizer would abort them at exit.
  list(APPEND GLISTEN_SPEC_ENV "GLISTEN_PRELOAD=${ASAN_LIB}:${UBSAN_LIB}"
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endif()

# spec/run fails a group in which a spec turned pending or none ran. Specs
# that need something a machine may lack carry a busted tag and run in a
# group of their own, which ctest shows as "Skipped" (with the reason in its
# output) where the capability is missing, never as "Passed".
set(GLISTEN_SPEC_CAPABILITIES netns ipv6 root openssl haproxy)
string(REPLACE ";" "," GLISTEN_SPEC_EXCLUDE "${GLISTEN_SPEC_CAPABILITIES}")

foreach(spec ${GLISTEN_SPECS})
  add_test(NAME spec_${spec}
    COMMAND sh spec/run --exclude-tags=${GLISTEN_SPEC_EXCLUDE} spec/${spec}_spec.lua
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(spec_${spec} PROPERTIES
    ENVIRONMENT "${GLISTEN_SPEC_ENV}"
    TIMEOUT 300)
endforeach()

foreach(cap ${GLISTEN_SPEC_CAPABILITIES})
  add_test(NAME spec_${cap}
    COMMAND sh spec/run --needs ${cap} --tags=${cap} spec
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(spec_${cap} PROPERTIES
    ENVIRONMENT "${GLISTEN_SPEC_ENV}"
    SKIP_RETURN_CODE 77
    TIMEOUT 300)
endforeach()
