#!/usr/bin/env bash
# Installs what building, running and testing datasphere needs, and nothing
# when it is all there already. Debian packages through apt-get; the npm
# packages of tests/package.json (none yet) into tests/node_modules.
#   scripts/deps.sh build   -- what `make` needs
#   scripts/deps.sh test    -- plus what `make check` needs
#   scripts/deps.sh bench   -- plus what `make bench` needs
set -euo pipefail
cd "$(dirname "$0")/.."

build_pkgs=(gcc make pkg-config libevent-dev libsqlite3-dev libjansson-dev
    libsodium-dev libhttp-parser-dev libhiredis-dev)
test_pkgs=(libcmocka-dev nginx-light redis-server curl nodejs npm)
bench_pkgs=(nginx-light curl nodejs npm wrk)

want=("${build_pkgs[@]}")
[ "${1:-build}" = test ] && want+=("${test_pkgs[@]}")
[ "${1:-build}" = bench ] && want+=("${bench_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
# nodejs from another source may stand in for Debian's nodejs/npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs/}")
    missing=("${missing[@]/npm/}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-build}" = test ] && [ ! -d tests/node_modules ]; then
    (cd tests && npm install --no-audit --no-fund --loglevel=error)
fi
