#!/usr/bin/env bash
# examples/python-app with its lock (issue #15): a cold build, `kiln lock`,
# then fully cached no-op rebuilds with the lock and without it,
# interleaved (medians). With the lock a rebuild reads neither the
# registry nor Debian's `InRelease`: the locked runs go through a dead HTTP
# proxy, so any request would fail them. The Debian builder comes from a
# loopback registry used as docker.io's mirror; python3 from deb.debian.org.
#   bench/python-lock.sh [PAIRS]
# Needs root (the builder image is debootstrapped) and a built `kiln`
# (KILN=path, default target/release/kiln).
set -euo pipefail
pairs=${1:-15}
. "$(dirname "$0")/lib.sh"
start_registry
push_builder

ctx=$work/ctx
cp -r "$root/examples/python-app" "$ctx"
export KILN_HOME=$work/home
k() { "$kiln" --registry-mirror "docker.io=$reg" "$@"; }

t0=$(now); k build "$ctx" >/dev/null 2>"$work/cold.err"; t1=$(now)
echo "cold build (no lock): $(awk "BEGIN{print $t1 - $t0}") s"
t0=$(now); k lock "$ctx" 2>"$work/lock.err"; t1=$(now)
echo "kiln lock (warm store): $(awk "BEGIN{print $t1 - $t0}") s"
mv "$ctx/Kilnfile.lock" "$work/saved.lock"

: > "$work/locked"; : > "$work/unlocked"
for i in $(seq "$pairs"); do
    cp "$work/saved.lock" "$ctx/Kilnfile.lock"
    t0=$(now)
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 k build "$ctx" >/dev/null 2>"$work/l.err" \
        || { cat "$work/l.err"; echo "the locked rebuild needed the network" >&2; exit 1; }
    t1=$(now)
    awk "BEGIN{print ($t1 - $t0) * 1000}" >> "$work/locked"
    rm "$ctx/Kilnfile.lock"
    t0=$(now); k build "$ctx" >/dev/null 2>"$work/u.err"; t1=$(now)
    awk "BEGIN{print ($t1 - $t0) * 1000}" >> "$work/unlocked"
done
echo "no-op rebuild median: with the lock $(median < "$work/locked") ms (no network), without $(median < "$work/unlocked") ms ($pairs pairs)"
