#!/usr/bin/env bash
# Issue 6's performance section (hyperfine, medians):
#   1. a fresh runner: an empty KILN_HOME, examples/go-hello at another path,
#      `--cache-from` the max cache a first runner exported: every step must
#      be CACHED and only the final image's blobs read from the cache; its
#      wall time against 3x the local no-op rebuild plus the time to copy
#      those blobs;
#   2. a re-export after a build that changed nothing writes no blob.
# The builder image (debootstrap bookworm, .ci/builder-image.sh) is served
# by Debian's docker-registry on 127.0.0.1 as docker.io's mirror, as in the
# demo; the fresh runner pulls it from there like any runner pulls its base.
# Run as root on a machine set up by .ci/setup. KILN defaults to
# target/release/kiln; RUNS (5) can be set.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
RUNS=${RUNS:-5}
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln-cli" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kiln-bench-cache.XXXXXX)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

echo "# kiln $(git -C "$repo" rev-parse --short HEAD), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
rootfs=$(bash "$repo/.ci/builder-image.sh")
source "$repo/.ci/local-registry.sh"
start_local_registry "$work"
mirror="--registry-mirror docker.io=127.0.0.1:$port"
export KILN_HOME=$work/home-a
"$KILN" import "$rootfs" -t debian-builder:bookworm >/dev/null
"$KILN" push -q debian-builder:bookworm "127.0.0.1:$port/library/debian:bookworm" >/dev/null

ctx_a=$work/a/go-hello
ctx_b=$work/somewhere/else/go-hello
mkdir -p "$ctx_a" "$ctx_b"
cp "$repo"/examples/go-hello/{Kilnfile,main.go} "$ctx_a"
cp "$repo"/examples/go-hello/{Kilnfile,main.go} "$ctx_b"
cache=$work/cache

echo "== first runner: cold build, --cache-to mode=max"
# shellcheck disable=SC2086
"$KILN" build "$ctx_a" $mirror --progress plain \
  --cache-to "type=local,dest=$cache,mode=max" 2>&1 | grep -E '^(built|cache export)'

echo "== re-export after a no-op build"
# shellcheck disable=SC2086
"$KILN" build "$ctx_a" $mirror --progress plain \
  --cache-to "type=local,dest=$cache,mode=max" 2>&1 | grep -E '^cache export'

echo "== fresh runner, once, to see what it did"
# shellcheck disable=SC2086
KILN_HOME=$work/home-b "$KILN" build "$ctx_b" $mirror --progress plain \
  --cache-from "type=local,src=$cache" 2>"$work/fresh.log" >/dev/null
grep -E '^=> ' "$work/fresh.log" | grep -v ' CACHED$' | grep -v ' done ' || echo "every step CACHED"
grep -E '^cache import' "$work/fresh.log"
grep -E ' done [0-9.]+s$' "$work/fresh.log" | sort -t' ' -k1 | awk '{print "  step " $0}' | grep -v ' done 0.0[0-4]s$' || true
bytes=$(sed -n 's/^cache import: .* blob(s) (\([0-9]*\) bytes).*/\1/p' "$work/fresh.log")
# the builder base is pulled lazily: its layers stay in the registry
lazy=$(find "$work/home-b/remote/sha256" -type f 2>/dev/null | wc -l)
fetched=0
for f in "$work"/home-b/remote/sha256/*; do
  [ -e "$f" ] && [ -e "$work/home-b/blobs/sha256/$(basename "$f")" ] && fetched=$((fetched + 1))
done
echo "base-image layers left in the registry: $lazy, fetched: $fetched"

# the final image's layers as they sit in the cache: what a fresh runner
# must read at least
digest=$("$KILN" build "$ctx_a" $mirror 2>/dev/null)
manifest=$KILN_HOME/blobs/sha256/${digest#sha256:}
layers=$(python3 -c 'import json,sys; print(" ".join(l["digest"][7:] for l in json.load(open(sys.argv[1]))["layers"]))' "$manifest")
final=0
for l in $layers; do final=$((final + $(stat -c %s "$cache/blobs/sha256/$l"))); done
# the base image's config comes from the cache too when it holds it (one
# registry round trip less)
base_config=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"][7:])' \
  "$work/home-b/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tags"]["docker.io/library/debian:bookworm"][7:])' "$work/home-b/tags.json")")
config_bytes=0
[ -e "$cache/blobs/sha256/$base_config" ] && config_bytes=$(stat -c %s "$cache/blobs/sha256/$base_config")
echo "bytes read from the cache: $bytes; the final image's layers: $final, the base image's config: $config_bytes"

echo "== timings"
# the cold build above left ~300 MB of dirty pages: flush them so their
# writeback does not land in the fsyncs of the timed runs
sync
# shellcheck disable=SC2086
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$work/noop.json" \
  -n "local no-op rebuild" "$KILN build $ctx_a $mirror"
# shellcheck disable=SC2086
hyperfine --runs "$RUNS" --export-json "$work/fresh.json" \
  --prepare "rm -rf $work/home-b" \
  -n "fresh runner (import + build)" "KILN_HOME=$work/home-b $KILN build $ctx_b $mirror --cache-from type=local,src=$cache"
mkdir -p "$work/copy"
hyperfine -N --runs "$RUNS" --export-json "$work/copy.json" \
  --prepare "rm -rf $work/copy" \
  -n "copy the final image's blobs" "sh -c 'mkdir -p $work/copy && for l in $layers; do cp $cache/blobs/sha256/\$l $work/copy/; done'"
python3 - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
res = lambda f: json.load(open(f"{w}/{f}.json"))["results"][0]
med = lambda f: res(f)["median"]
# CPU time (user + sys, means: hyperfine keeps no per-run CPU times) is
# steadier than wall time on a shared machine
cpu = lambda f: (res(f)["user"] + res(f)["system"]) * 1000
noop, fresh, copy = med("noop"), med("fresh"), med("copy")
limit = 3 * noop + copy
print(f"median: no-op {noop*1000:.0f} ms, fresh runner {fresh*1000:.0f} ms, copy {copy*1000:.0f} ms")
print(f"cpu (user+sys, mean): no-op {cpu('noop'):.1f} ms, fresh runner {cpu('fresh'):.1f} ms, copy {cpu('copy'):.1f} ms")
print(f"goal: fresh <= 3 x no-op + copy = {limit*1000:.0f} ms: {'met' if fresh <= limit else 'NOT met'} ({fresh/limit:.2f}x of the limit)")
EOF
