#!/bin/sh
# The options table of the docs is the one the schema prints: fails, with
# the difference, when they part.
#   sh tests/docs_options.sh GLISTEN_LUA DOC
# The table stands in DOC between the lines "<!-- options -->" and
# "<!-- /options -->"; to renew it, paste the output of
# `glisten-lua --options-markdown` there.
set -u
bin=$1 doc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" --options-markdown >"$tmp/schema" || { echo "$bin --options-markdown failed"; exit 1; }
sed -n '/^<!-- options -->$/,/^<!-- \/options -->$/p' "$doc" | sed '1d;$d' >"$tmp/doc"
if [ ! -s "$tmp/doc" ]; then
  echo "$doc has no table between <!-- options --> and <!-- /options -->"
  exit 1
fi
if ! diff -u "$tmp/doc" "$tmp/schema"; then
  echo "$doc: the options table differs from the schema (lua/options.h); paste in the output of '$bin --options-markdown'"
  exit 1
fi
echo "docs options: $(grep -c '^| `' "$tmp/schema") options, as the schema has them"
