#!/bin/sh
# Runs one libFuzzer harness on a fresh copy of its seed corpus, so that the
# inputs it finds stay in the build tree and never land in the sources.
#
#   sh tests/fuzz/run.sh HARNESS SEEDS WORKDIR [libFuzzer options...]
#
# WORKDIR is emptied first; the corpus grows in WORKDIR/corpus, and what
# libFuzzer saves on a failure (crash-*, leak-*, timeout-*, oom-*) goes to
# WORKDIR. Exits non-zero on any crash, leak, timeout (10 s for one input)
# or failed check: libFuzzer's own status.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 HARNESS SEEDS WORKDIR [libFuzzer options...]" >&2; exit 2; }
harness=$1
seeds=$2
work=$3
shift 3
rm -rf "$work"
mkdir -p "$work/corpus"
cp "$seeds"/* "$work/corpus/"
exec "$harness" -artifact_prefix="$work/" -timeout=10 -print_final_stats=1 \
  "$@" "$work/corpus"
