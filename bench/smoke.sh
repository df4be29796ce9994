#!/bin/sh
# A short run of every load generator mode against glisten-lua and the C
# floor: correctness only (every echoed byte checked, every idle connection
# answering), no timing. Used by ctest as bench_smoke.
#   sh bench/smoke.sh BUILD_DIR
set -eu
build=${1:-build}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

n=0
start() { # start SERVER ARGS...: sets pid and port
  # A file of its own per server: the redirection happens in the child, so
  # a shared file could still hold the previous server's line when read.
  n=$((n + 1)); err="$tmp/err$n"
  "$@" 2>"$err" &
  pid=$!
  i=0
  while ! grep -q "listening on .*:[0-9][0-9]*$" "$err" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && { cat "$err"; exit 1; }
    sleep 0.05
  done
  port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\)$/\1/p' "$err" | head -1)
}

for server in "$build/echo_libev 0" "$build/glisten-lua scripts/echo.lua 0"; do
  start $server
  echo "== $server on port $port"
  "$build/loadgen" echo 127.0.0.1 "$port" -c 10 -s 64 -p 4 -n 20000 -w 0
  "$build/loadgen" echo 127.0.0.1 "$port" -c 4 -s 16384 -n 500 -w 0
  "$build/loadgen" connect 127.0.0.1 "$port" -c 10 -d 0.5
  "$build/loadgen" idle 127.0.0.1 "$port" -n 500 -h 0
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
echo "bench smoke: 2 passed, 0 failed"
