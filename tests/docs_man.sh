#!/bin/sh
# The OPTIONS entries of the man page are the ones the schema prints: fails,
# with the difference, when they part.
#   sh tests/docs_man.sh GLISTEN_LUA MANPAGE
# The entries stand in MANPAGE between the roff comment lines '.\" options'
# and '.\" /options'; to renew them, paste the output of
# `glisten-lua --options-man` there.
set -u
bin=$1 page=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" --options-man >"$tmp/schema" || { echo "$bin --options-man failed"; exit 1; }
sed -n '/^\.\\" options$/,/^\.\\" \/options$/p' "$page" | sed '1d;$d' >"$tmp/page"
if [ ! -s "$tmp/page" ]; then
  echo "$page has no entries between '.\\\" options' and '.\\\" /options'"
  exit 1
fi
if ! diff -u "$tmp/page" "$tmp/schema"; then
  echo "$page: the OPTIONS entries differ from the schema (lua/options.h); paste in the output of '$bin --options-man'"
  exit 1
fi
echo "man page options: $(grep -c '^\.TP$' "$tmp/schema") entries, as the schema has them"
