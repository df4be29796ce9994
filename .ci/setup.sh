#!/bin/sh
# Installs what glisten-lua needs to build and test, from Debian's packages,
# when any of it is missing. Safe to run again: it installs nothing twice.
set -eu
pkgs="build-essential cmake pkg-config libev-dev liblua5.4-dev lua5.4 libcmocka-dev lua-busted libssl-dev openssl curl ca-certificates netcat-openbsd socat haproxy redis-server redis-tools memcached libmemcached-tools nginx-light wrk procps iproute2 util-linux clang libfuzzer-14-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends $missing
