#!/bin/sh
# A short run of every load generator mode against glisten-lua and the C
# floor: correctness only, no timing. Used by ctest as bench_smoke.
#
#   sh bench/smoke.sh BUILD_DIR [SERVER...]
#
# Each SERVER is one command line (split on spaces) that serves echo on
# 127.0.0.1 and prints "listening on HOST:PORT" on stderr; the default is
# "BUILD_DIR/echo_libev 0" and "BUILD_DIR/glisten-lua scripts/echo.lua 0".
# Give others to try the smoke itself, e.g. a script that never answers:
#   sh bench/smoke.sh build "build/glisten-lua /tmp/silent.lua 0"
#
# With the default servers two more follow. glisten-lua on a Unix socket
# (unix:PATH, "listening on unix:PATH"): start, the two echo checks,
# shutdown, stderr. Then TLS, with a throwaway certificate from the openssl
# command (skipped, with a message, when there is none): the TLS floor
# BUILD_DIR/echo_libev_tls, and glisten-lua with --tls-cert and --tls-key
# once its --help lists them, each through start, the two echo checks over
# TLS (loadgen --tls), the handshake checks below, idle over TLS (200
# connections held 1 s), shutdown and stderr:
#   handshake       at least one connection completed (connect, full TLS
#                   handshake, echo, close) in 0.5 s, no session offered,
#                   every completed echo's bytes checked
#   handshake --resume  the same, with every session offered resumed and at
#                   least one offered
#
# Per server, each of these is one check, passed or failed:
#   start     the server prints its port within 30 s
#   echo      exactly N round trips, every byte echoed and checked (twice:
#             10 x 64 B with 4 in flight, and 4 x 16 KiB)
#   connect   at least one connection completed (connect, echo, close) in
#             0.5 s, and every completed echo's bytes checked
#   idle      500 connections held open 2 s without the server closing or
#             writing to any, then each answers a byte
#   shutdown  SIGTERM makes it exit, with status 0, within 30 s
#   stderr    no sanitizer report (AddressSanitizer, LeakSanitizer, UBSan)
# loadgen runs with a time limit (-t 20), so a server that stops answering
# fails its check instead of hanging the run. The figures checked are the
# ones loadgen prints on its "mode=" line. The last line reads
# "bench smoke: N passed, M failed"; the exit status is 1 if M > 0.
set -uf
build=${1:-build}
[ $# -gt 0 ] && shift
extra=0   # 1: the Unix socket and TLS servers follow the default ones
[ $# -eq 0 ] && { set -- "$build/echo_libev 0" "$build/glisten-lua scripts/echo.lua 0"; extra=1; }

limit=20   # seconds: loadgen's -t, the bound on each run (never reached
           # by a working server: an unloaded run takes well under 1 s)
grace=30   # seconds: the bound on the wait for the port and for the exit
tmp=$(mktemp -d)
pid=
passed=0
failed=0
tlsflag=  # "--tls" while the server under test speaks TLS

# alive PID: the process runs and is still this shell's child (so a pid
# reused after the server was reaped is never taken for it).
alive() {
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  set -- $st
  [ "$1" != Z ] && [ "$2" = "$$" ]
}
# Each server runs in a session of its own (setsid execs it in place, so $!
# is the server), which lets end() kill whatever it started along with it.
group=
command -v setsid >/dev/null 2>&1 && group="setsid -w"
# end SERVER: kills it and what it started.
end() {
  alive "$1" && { kill -KILL -- "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null; }
  wait "$1" 2>/dev/null
}
cleanup() {
  [ -n "$pid" ] && end "$pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); echo "  ok    $*"; }
fail() { failed=$((failed + 1)); echo "  FAIL  $*"; }
show() { [ -s "$1" ] && sed 's/^/        | /' "$1"; return 0; }
sanitized() { grep -E 'ERROR: [A-Za-z]*Sanitizer|WARNING: [A-Za-z]*Sanitizer|SUMMARY: [A-Za-z]*Sanitizer|runtime error: ' "$1"; }
# field NAME FILE: NAME's value on loadgen's "mode=" line in FILE
field() { sed -n "s/^mode=.* $1=\([^ ]*\).*/\1/p" "$2" | head -1; }

n=0
# start SERVER ARGS...: sets pid, host and port (unix:PATH and 0 for a Unix
# socket); returns 1 if it printed no port
start() {
  # A file of its own per server: the redirection happens in the child, so
  # a shared file could still hold the previous server's line when read.
  n=$((n + 1)); err="$tmp/err$n"
  $group "$@" >"$tmp/out$n" 2>"$err" &
  pid=$!
  i=0
  while ! grep -q -e "listening on .*:[0-9][0-9]*$" -e "listening on unix:" "$err" 2>/dev/null; do
    i=$((i + 1))
    if ! alive "$pid" || [ $i -gt $((grace * 10)) ]; then return 1; fi
    sleep 0.1
  done
  host=$(sed -n 's/.*listening on \(unix:.*\)$/\1/p' "$err" | head -1)
  if [ -n "$host" ]; then
    port=0
  else
    host=127.0.0.1
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\)$/\1/p' "$err" | head -1)
  fi
}

# loadgen MODE ARGS...: runs loadgen against the server; leaves its output
# in $out and its stderr in $lerr and returns its exit status.
loadgen() {
  n=$((n + 1)); out="$tmp/gen$n"; lerr="$tmp/gen$n.err"
  mode=$1; shift
  timeout -k 5 $((limit + 30)) "$build/loadgen" "$mode" "$host" "$port" "$@" \
    >"$out" 2>"$lerr"
}

# check_run WHAT RC: the common failures of a loadgen run; 0 if none
check_run() {
  if [ "$2" -ne 0 ] || sanitized "$lerr" >/dev/null; then
    case $2 in
      124|137) fail "$1: loadgen did not finish in $((limit + 30)) s" ;;
      *) fail "$1: loadgen exited $2" ;;
    esac
    show "$out"; show "$lerr"
    return 1
  fi
}

echo_check() { # echo_check CONNS SIZE DEPTH COUNT
  what="echo${tlsflag:+ over TLS} $1 x $2 B, $3 in flight"
  loadgen echo $tlsflag -c "$1" -s "$2" -p "$3" -n "$4" -w 0 -t "$limit"
  check_run "$what" $? || return
  rt=$(field roundtrips "$out"); by=$(field bytes "$out"); er=$(field errors "$out")
  want=$(($4 * $2))
  if [ "$rt" = "$4" ] && [ "$by" = "$want" ] && [ "$er" = 0 ]; then
    pass "$what: $rt of $4 round trips, $by of $want bytes checked"
  else
    fail "$what: round trips ${rt:-?} of $4, bytes ${by:-?} of $want, errors ${er:-?}"
    show "$out"
  fi
}

connect_check() {
  what="connect 10 at a time for 0.5 s, 64 B echo each"
  loadgen connect -c 10 -s 64 -d 0.5 -t "$limit"
  check_run "$what" $? || return
  done_=$(field done "$out"); by=$(field bytes "$out"); er=$(field errors "$out")
  if [ "${done_:-0}" -gt 0 ] 2>/dev/null && [ "$by" = "$((done_ * 64))" ] && [ "$er" = 0 ]; then
    pass "$what: $done_ connections completed, $by bytes checked"
  else
    fail "$what: ${done_:-?} connections completed, bytes ${by:-?}, errors ${er:-?}"
    show "$out"
  fi
}

# handshake_check [--resume]: loadgen's handshake mode for 40 connections,
# 10 at a time (so each slot offers its session about three times); a count,
# not a time, so a slow machine makes it slower, never different
handshake_check() {
  what="handshake${1:+ $1} 40 connections 10 at a time, 64 B echo each"
  loadgen handshake "$@" -c 10 -s 64 -n 40 -t "$limit"
  check_run "$what" $? || return
  done_=$(field done "$out"); by=$(field bytes "$out"); er=$(field errors "$out")
  of=$(field offered "$out"); re=$(field resumed "$out")
  if [ $# -gt 0 ]; then
    sessions_ok() { [ "${of:-0}" -gt 0 ] 2>/dev/null && [ "$re" = "$of" ]; }
  else
    sessions_ok() { [ "$of" = 0 ] && [ "$re" = 0 ]; }
  fi
  if [ "${done_:-0}" -gt 0 ] 2>/dev/null && [ "$by" = "$((done_ * 64))" ] && [ "$er" = 0 ] &&
     sessions_ok; then
    pass "$what: $done_ connections completed, $re of $of sessions offered resumed, $by bytes checked"
  else
    fail "$what: ${done_:-?} connections completed, ${re:-?} of ${of:-?} sessions offered resumed, bytes ${by:-?}, errors ${er:-?}"
    show "$out"
  fi
}

idle_check() { # idle_check COUNT HOLD
  what="idle${tlsflag:+ over TLS} $1 connections held $2 s"
  loadgen idle $tlsflag -n "$1" -h "$2" -t "$limit"
  check_run "$what" $? || return
  op=$(field open "$out"); an=$(field answered "$out"); he=$(field held "$out")
  er=$(field errors "$out")
  if [ "$op" = "$1" ] && [ "$an" = "$1" ] && [ "$er" = 0 ] &&
     awk -v h="${he:-0}" -v w="$2" 'BEGIN { exit !(h + 0 >= w + 0) }'; then
    pass "$what: $op open, held $he s, $an of $1 answered afterwards"
  else
    fail "$what: ${op:-?} open, held ${he:-?} s, ${an:-?} of $1 answered, errors ${er:-?}"
    show "$out"
  fi
}

# stop: SIGTERM to the server, which must exit 0 within $grace s and have
# written no sanitizer report on its stderr.
stop() {
  gone=
  alive "$pid" || gone=" (it had exited before)"
  kill -TERM "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ $i -lt $((grace * 10)) ]; do i=$((i + 1)); sleep 0.1; done
  if alive "$pid"; then
    end "$pid"; pid=
    fail "shutdown: still running $grace s after SIGTERM (killed)"
    show "$err"
  else
    wait "$pid" 2>/dev/null; rc=$?; pid=
    if [ $rc -eq 0 ]; then
      pass "shutdown: exited 0 after SIGTERM"
    else
      fail "shutdown: exited $rc after SIGTERM$gone"
      show "$err"
    fi
  fi
  if sanitized "$err" >/dev/null; then
    fail "stderr: sanitizer report:"
    show "$err"
  else
    pass "stderr: no sanitizer report ($(wc -l <"$err") lines)"
  fi
}

# begin SERVER: starts it and passes or fails start; returns 1 if it failed
begin() {
  if ! start $1; then
    if alive "$pid"; then
      end "$pid"
      fail "start: $1 printed no port in $grace s"
    else
      wait "$pid" 2>/dev/null
      fail "start: $1 exited $? before listening"
    fi
    pid=
    show "$err"
    return 1
  fi
  if [ "$port" = 0 ]; then
    echo "== $1 on $host"
    pass "start: listening on $host"
  else
    echo "== $1 on port $port"
    pass "start: listening on port $port"
  fi
}

for server in "$@"; do
  begin "$server" || continue
  echo_check 10 64 4 20000
  echo_check 4 16384 1 500
  connect_check
  idle_check 500 2
  stop
done

if [ "$extra" = 1 ] && begin "$build/glisten-lua scripts/echo.lua unix:$tmp/echo.sock"; then
  echo_check 10 64 4 20000
  echo_check 4 16384 1 500
  stop
fi

if [ "$extra" = 1 ]; then
  if ! command -v openssl >/dev/null 2>&1; then
    echo "== TLS skipped: no openssl command to make a certificate with"
  elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
         -subj /CN=localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >"$tmp/openssl" 2>&1; then
    fail "TLS: openssl made no certificate"
    show "$tmp/openssl"
  else
    set -- "$build/echo_libev_tls 0 $tmp/cert.pem $tmp/key.pem"
    if "$build/glisten-lua" --help 2>&1 | grep -q -e --tls-cert; then
      set -- "$@" "$build/glisten-lua --tls-cert $tmp/cert.pem --tls-key $tmp/key.pem scripts/echo.lua 0"
    else
      echo "== glisten-lua over TLS skipped: its --help lists no --tls-cert"
    fi
    tlsflag=--tls
    for server in "$@"; do
      begin "$server" || continue
      echo_check 10 64 4 2000
      echo_check 4 16384 1 100
      handshake_check
      handshake_check --resume
      idle_check 200 1
      stop
    done
    tlsflag=
  fi
fi
echo "bench smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
