#!/bin/sh
# The options a document lists are the ones the schema prints: fails, with
# the difference, when they part.
#   sh tests/docs_options.sh GLISTEN_LUA DOC
# A Markdown DOC holds the output of `glisten-lua --options-markdown`
# between the lines "<!-- options -->" and "<!-- /options -->"; a man page
# (DOC ending in .1) the output of `glisten-lua --options-man` between the
# roff comment lines '.\" options' and '.\" /options'. To renew a document,
# paste that output there.
set -u
bin=$1 doc=$2
case "$doc" in
  *.1) flag=--options-man; open='.\" options'; close='.\" /options' ;;
  *) flag=--options-markdown; open='<!-- options -->'; close='<!-- /options -->' ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" "$flag" >"$tmp/schema" || { echo "$bin $flag failed"; exit 1; }
# (the markers go through the environment: awk -v would take the \ of .\")
OPEN=$open CLOSE=$close awk \
  '$0 == ENVIRON["CLOSE"] { inside = 0 } inside { print } $0 == ENVIRON["OPEN"] { inside = 1 }' \
  "$doc" >"$tmp/doc"
if [ ! -s "$tmp/doc" ]; then
  echo "$doc has nothing between the lines '$open' and '$close'"
  exit 1
fi
if ! diff -u "$tmp/doc" "$tmp/schema"; then
  echo "$doc: the options differ from the schema (lua/options.h); paste in the output of '$bin $flag'"
  exit 1
fi
echo "$doc: $(grep -c -e '^| `' -e '^\.TP$' "$tmp/schema") options, as the schema has them"
