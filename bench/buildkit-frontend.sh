#!/usr/bin/env bash
# examples/go-hello through kiln's BuildKit frontend (`// syntax=`) against
# bench/go-hello.Dockerfile through BuildKit's built-in dockerfile.v0, on the
# same buildkitd (v0.32.2, root, runc worker), interleaved (issue 19).
# Beside them, through the same kiln frontend image:
#   floor:   a trivial Kilnfile (scratch and one file): what BuildKit spends
#            on any external (gateway.v0) frontend;
#   scratch: go-hello with `scratch()` for `static_base()` (the Dockerfile's
#            final stage): the static base's share.
#   bench/buildkit-frontend.sh [COLD_ROUNDS] [CACHED_ROUNDS]
# Cold (kiln, floor, docker): `buildctl prune --all` before each build (the
# Debian builder comes from a loopback registry, golang-go from
# deb.debian.org; a cold kiln-frontend build also pulls its frontend
# image). Cached (all four): the same build again, nothing changed. Prints
# one line per build and the medians. Needs root, the release build of the
# static frontend (frontend/gateway/build-image.sh builds it) and a release
# `kiln`.
set -euo pipefail
cold_pairs=${1:-3}
cached_pairs=${2:-10}
. "$(dirname "$0")/lib.sh"

start_registry
start_buildkitd

export KILN_HOME=$work/kiln-home
"$kiln" import "$(bash "$root/.ci/builder-image.sh")" -t debian-builder:bookworm >/dev/null
"$kiln" push -q debian-builder:bookworm "$reg/library/debian:bookworm" >/dev/null
triple=$(rustc -vV | sed -n 's/^host: //p')
mkdir -p "$work/fctx"
cp "$root/target/$triple/release/kiln-frontend" "$work/fctx/"
"$kiln" build -f "$root/frontend/gateway/Kilnfile" "$work/fctx" \
    -o "type=registry,name=$reg/kiln-frontend:bench" >/dev/null 2>&1

mkdir -p "$work/kiln" "$work/scratch" "$work/floor" "$work/docker"
cp "$root/examples/go-hello/main.go" "$work/kiln/"
cp "$root/examples/go-hello/main.go" "$work/scratch/"
cp "$root/examples/go-hello/main.go" "$work/docker/"
{ echo "// syntax=$reg/kiln-frontend:bench"; grep -v '^// syntax=' "$root/examples/go-hello/Kilnfile"; } \
    > "$work/kiln/Kilnfile"
sed 's/static_base()/scratch()/' "$work/kiln/Kilnfile" > "$work/scratch/Kilnfile"
grep -q 'scratch()' "$work/scratch/Kilnfile"
{ echo "// syntax=$reg/kiln-frontend:bench"; echo 'let app = scratch().file("/hello.txt", "hello\n");'; } \
    > "$work/floor/Kilnfile"
cp "$root/bench/go-hello.Dockerfile" "$work/docker/Dockerfile"

build() { # kiln|scratch|floor|docker -> seconds
    local d=$work/$1 file=Kilnfile
    [ "$1" = docker ] && file=Dockerfile
    local t0 t1
    t0=$(date +%s.%N)
    bctl build --progress quiet --frontend dockerfile.v0 --local "context=$d" \
        --local "dockerfile=$d" --opt "filename=$file" \
        --output "type=oci,dest=$work/$1.tar" >/dev/null 2>"$work/$1.err" ||
        { cat "$work/$1.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk "BEGIN {printf \"%.3f\", $t1 - $t0}"
}

: > "$work/cold.kiln"; : > "$work/cold.floor"; : > "$work/cold.docker"
for i in $(seq "$cold_pairs"); do
    for who in kiln floor docker; do
        bctl prune --all >/dev/null
        s=$(build "$who"); echo "cold $who $s"; echo "$s" >> "$work/cold.$who"
    done
done
# Warm every cache again (each cold run above pruned the others').
for who in kiln scratch floor docker; do build "$who" >/dev/null; done
for who in kiln scratch floor docker; do : > "$work/cached.$who"; done
for i in $(seq "$cached_pairs"); do
    for who in kiln scratch floor docker; do
        s=$(build "$who"); echo "cached $who $s"; echo "$s" >> "$work/cached.$who"
    done
done
echo "median cold: kiln $(median < "$work/cold.kiln") s, floor $(median < "$work/cold.floor") s, dockerfile.v0 $(median < "$work/cold.docker") s"
echo "median cached: kiln $(median < "$work/cached.kiln") s, scratch $(median < "$work/cached.scratch") s, floor $(median < "$work/cached.floor") s, dockerfile.v0 $(median < "$work/cached.docker") s"
