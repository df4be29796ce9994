#!/bin/sh
# Builds glisten-lua twice, plainly and with AddressSanitizer +
# UndefinedBehaviorSanitizer, and runs every test of each through ctest;
# then a third time with clang and the libFuzzer harnesses (tests/fuzz/),
# and runs each of those for 60 s. Exits non-zero when any build or test
# fails.
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs")
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGLISTEN_SANITIZE=ON
cmake --build build-asan -j "$jobs"
(cd build-asan && ctest --output-on-failure -j "$jobs")
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLISTEN_FUZZ=ON
cmake --build build-fuzz -j "$jobs"
(cd build-fuzz && ctest -L fuzz --output-on-failure -j "$jobs")
