#!/bin/sh
# Layers import one way: a file of the binding includes and calls only
# files of its own layer or lower ones, and core/ includes and calls nothing
# of Lua's or the binding's. Calls are read from the symbols each object file
# uses and defines (nm), so a call that goes around the headers counts too;
# includes from the #include lines of every .c and .h.
#
#   sh tests/layers.sh BUILD_DIR
#
# The layers of lua/, lowest first (docs/internals.md explains them):
#   0  state value options fail        Lua states, values as bytes, the
#                                      options, the words of failure
#   1  runtime fiber timer preempt     the runtime, the scheduler, timers,
#                                      late callbacks
#   2  socket sockopt connect tlsctx   the socket object, its names and
#                                      options; connect; TLS contexts
#   3  server served acceptor mailbox  serve: the server, a served
#      listen                          connection's life, accepting under
#                                      max_connections, the mailbox;
#                                      listen/accept
#   4  messages shared                 messages between states; glisten.shared
#   5  script pool                     loading a script; the worker pool
#   6  glisten main                    the module front; the command
# A module's header is named for it (x.h for x.c); served.h is the server
# layer's own, which no other layer includes. A lower layer that must tell
# a higher one something offers a hook.
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
    runtime|fiber|timer|preempt) echo 1 ;;
    socket|sockopt|connect|tlsctx) echo 2 ;;
    server|served|acceptor|mailbox|listen|prelude) echo 3 ;;
    messages|shared) echo 4 ;;
    script|pool) echo 5 ;;
    glisten|main) echo 6 ;;
    *) echo "?" ;;
  esac
}

# the objects of the sources there are now (a build dir may keep others)
src=$(cd "$here/.." && pwd)
objlist=""
for c in "$src"/lua/*.c; do
  f=$(basename "$c" .c)
  [ "$(layer "$f")" = "?" ] && { echo "lua/$f.c has no layer in tests/layers.sh"; exit 1; }
  [ -f "$objs/$f.c.o" ] || { echo "no $objs/$f.c.o: build first"; exit 2; }
  objlist="$objlist $objs/$f.c.o"
done

# symbol -> the file that defines it
for o in $objlist; do
  f=$(basename "$o" .c.o)
  nm --defined-only -g "$o" | awk -v f="$f" '{print $3, f}'
done | sort >"$tmp/defs"

bad=0
for o in $objlist; do
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

# Includes: of lua/, a header of the same layer or a lower one (served.h:
# its own layer only); of core/, no header of Lua's or the binding's.
for f in "$src"/lua/*.c "$src"/lua/*.h; do
  m=$(basename "$f"); m=${m%.*}
  lf=$(layer "$m")
  [ "$lf" = "?" ] && { echo "lua/$(basename "$f") has no layer in tests/layers.sh"; bad=1; continue; }
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)\.h".*/\1/p' "$f" |
  while read -r h; do
    [ -f "$src/lua/$h.h" ] || continue
    lh=$(layer "$h")
    if [ "$lh" = "?" ] || [ "$lh" -gt "$lf" ] ||
       { [ "$h" = served ] && [ "$lh" != "$lf" ]; }; then
      echo "lua/$(basename "$f") (layer $lf) includes $h.h (layer $lh)"
    fi
  done
done >"$tmp/inc"
if [ -s "$tmp/inc" ]; then
  echo "includes from a lower layer to a higher one:"
  sed 's/^/  /' "$tmp/inc"
  bad=1
fi
for f in "$src"/core/*.c "$src"/core/*.h; do
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]\([^">]*\)[">].*/\1/p' "$f" |
  while read -r h; do
    case "$h" in
      lua.h|lauxlib.h|lualib.h|luaconf.h) echo "core/$(basename "$f") includes $h" ;;
      *) [ -f "$src/lua/$h" ] && [ ! -f "$src/core/$h" ] &&
           echo "core/$(basename "$f") includes lua/$h" ;;
    esac
  done
done >"$tmp/coreinc"
if [ -s "$tmp/coreinc" ]; then
  echo "core/ includes Lua or the binding:"
  sed 's/^/  /' "$tmp/coreinc"
  bad=1
fi

[ $bad -eq 0 ] || exit 1
echo "layers: $(wc -l <"$tmp/up") calls up (all listed in tests/layers.allow), $(wc -l <"$tmp/defs") symbols of lua/ checked, $(ls "$src"/lua/*.[ch] | wc -l) files' includes; core/ includes and calls no Lua"
