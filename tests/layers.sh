#!/bin/sh
# Layers import one way: a file of the binding calls only files of its own
# layer or lower ones, and core/ calls nothing of Lua's or the binding's.
# Read from the symbols each object file uses and defines (nm), so a call
# that goes around the headers counts too.
#
#   sh tests/layers.sh BUILD_DIR
#
# The layers of lua/, lowest first (docs/internals.md explains them):
#   0  state.c value.c options.c    Lua states, values as bytes, the options,
#      fail.c                       the words of failure
#   1  sched.c                      the runtime, fibers, waits, timers
#   2  socket.c connect.c           the socket object; connect
#   3  server.c                     serve, served connections, listen/accept
#   4  workers.c shared.c           messages between states; glisten.shared
#   5  script.c pool.c              loading a script; the worker pool
#   6  glisten.c main.c             the module front; the command
# A lower layer that must tell a higher one something offers a hook.
# tests/layers.allow lists the calls up that are still to be turned into
# hooks, one "file symbol" a line: a call up not listed fails, and so does
# a listed one that is gone (the list only shrinks).
set -u
build=$1
here=$(cd "$(dirname "$0")" && pwd)
objs="$build/CMakeFiles/glisten-lua.dir/lua"
[ -d "$objs" ] || { echo "no objects in $objs: build first"; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

layer() {
  case "$1" in
    state|value|options|fail) echo 0 ;;
    sched) echo 1 ;;
    socket|connect) echo 2 ;;
    server) echo 3 ;;
    workers|shared) echo 4 ;;
    script|pool) echo 5 ;;
    glisten|main) echo 6 ;;
    *) echo "?" ;;
  esac
}

for o in "$objs"/*.c.o; do
  f=$(basename "$o" .c.o)
  [ "$(layer "$f")" = "?" ] && { echo "lua/$f.c has no layer in tests/layers.sh"; exit 1; }
done

# symbol -> the file that defines it
for o in "$objs"/*.c.o; do
  f=$(basename "$o" .c.o)
  nm --defined-only -g "$o" | awk -v f="$f" '{print $3, f}'
done | sort >"$tmp/defs"

bad=0
for o in "$objs"/*.c.o; do
  f=$(basename "$o" .c.o)
  nm -u "$o" | awk '{print $2}' | sort | join - "$tmp/defs" | while read -r sym def; do
    if [ "$(layer "$def")" -gt "$(layer "$f")" ]; then echo "$f $sym"; fi
  done
done | sort >"$tmp/up"
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/layers.allow" | sort >"$tmp/allow"

new=$(comm -23 "$tmp/up" "$tmp/allow")
gone=$(comm -13 "$tmp/up" "$tmp/allow")
if [ -n "$new" ]; then
  echo "calls from a lower layer to a higher one (offer a hook instead):"
  echo "$new" | while read -r f sym; do
    echo "  lua/$f.c (layer $(layer "$f")) calls $sym"
  done
  bad=1
fi
if [ -n "$gone" ]; then
  echo "tests/layers.allow lists calls up that are gone; take them off the list:"
  echo "$gone" | sed 's/^/  /'
  bad=1
fi

# core/ is plain C: it calls nothing of Lua's and nothing of the binding's.
core=$(find "$build" -name libglisten_core.a | head -n 1)
[ -n "$core" ] || { echo "no libglisten_core.a in $build"; exit 2; }
ups=$(nm -u "$core" 2>/dev/null | awk '{print $2}' | grep -E '^(lua_|luaL_|lg_)' | sort -u)
if [ -n "$ups" ]; then
  echo "core/ calls into Lua or the binding:"
  echo "$ups" | sed 's/^/  /'
  bad=1
fi

[ $bad -eq 0 ] || exit 1
echo "layers: $(wc -l <"$tmp/up") calls up (all listed in tests/layers.allow), $(wc -l <"$tmp/defs") symbols of lua/ checked; core/ calls no Lua"
