#!/usr/bin/env bash
# What the default attestations (min provenance, the SBOM on static_base())
# cost examples/go-hello, against `--provenance=false --sbom=false`
# (docs/benchmarks.md, issue 17). Run under the cargo lock:
#   flock /tmp/kiln-cargo.lock bash bench/attestations.sh [KILN] [PAIRS] [COLD_PAIRS]
# Imports the Debian builder (.ci/builder-image.sh) as
# docker.io/library/debian:bookworm, then: COLD_PAIRS interleaved cold
# builds (a fresh store each; apt-get install golang-go from
# deb.debian.org), and bench/attestations.py's PAIRS no-op rebuilds and
# rebuilds with the attestation records deleted.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kiln=${1:-$root/target/debug/kiln}
pairs=${2:-40}
cold=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$(bash "$root/.ci/builder-image.sh")
fresh() {
    rm -rf "$work/home"
    KILN_HOME="$work/home" "$kiln" import "$rootfs" -t docker.io/library/debian:bookworm >/dev/null
}
timed() {
    local t0 t1
    t0=$(date +%s%N)
    KILN_HOME="$work/home" "$kiln" build --progress plain -t bench:1 "$@" "$root/examples/go-hello" >/dev/null 2>&1
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
with=() without=()
for _ in $(seq "$cold"); do
    fresh; with+=("$(timed)")
    fresh; without+=("$(timed --provenance=false --sbom=false)")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "cold build: with $(med "${with[@]}") ms (${with[*]}), without $(med "${without[@]}") ms (${without[*]})"
KILN_HOME="$work/home" python3 "$root/bench/attestations.py" "$kiln" "$root/examples/go-hello" "$pairs"
