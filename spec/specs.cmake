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
  scripts)

foreach(spec ${GLISTEN_SPECS})
  add_test(NAME spec_${spec}
    COMMAND ${LUA54} ${BUSTED} --helper=spec/helper.lua
            --output=utfTerminal spec/${spec}_spec.lua
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(spec_${spec} PROPERTIES
    ENVIRONMENT "GLISTEN_BUILD=${CMAKE_BINARY_DIR}"
    TIMEOUT 300)
endforeach()
