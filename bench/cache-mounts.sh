#!/usr/bin/env bash
# Cache mounts in the exported cache (`--cache-to ...,cache-mounts=true`,
# issue 6 item 3), hyperfine medians:
#   1. the cold export of a cache mount of SIZE_MB (many files, half
#      compressible), once;
#   2. a re-export after a no-op build: the unchanged mount is recognized
#      by its metadata fingerprint and not read (0 blobs written), against
#      the same no-op build exporting without cache mounts, and against the
#      re-export with the fingerprint note removed (tar + zstd again, still
#      0 blobs written: the bytes are deterministic);
#   3. a fresh runner (empty KILN_HOME) whose step re-runs: the import of
#      the mount (fetch, verify, extract) against the same build without it.
# Run as root on a machine set up by .ci/setup (busybox-static, hyperfine).
# KILN defaults to target/release/kiln; RUNS (5) and SIZE_MB (200) can be set.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-200}
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln-cli" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kiln-bench-mounts.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
# medians (and mean user+sys CPU) of a hyperfine JSON export
medians() {
  python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("  %-78s median %8.1f ms  cpu %8.1f ms" % (r["command"], r["median"] * 1e3, (r["user"] + r["system"]) * 1e3))
' "$1"
}

echo "# kiln $(git -C "$repo" rev-parse --short HEAD), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp"
cp /bin/busybox "$root/bin/"
for a in sh dd seq cat mkdir head base64 echo test; do ln -s busybox "$root/bin/$a"; done
export KILN_HOME=$work/home-a
"$KILN" import "$root" -t bb:1 >/dev/null

# SIZE_MB in 1000 files of SIZE_MB kB each, in 10 directories: half
# random bytes, half base64 text (a compiler cache is a mix).
files=1000
kb=$SIZE_MB
kilnfile() { # $1: a word that changes the step, so it re-runs
  cat <<EOF
let app = image("bb:1")
    .run("echo $1; test -f /c/done || { for d in \$(seq 0 9); do mkdir -p /c/\$d; for i in \$(seq 0 $((files / 10 - 1))); do { head -c $((kb * 512)) /dev/urandom; head -c $((kb * 384)) /dev/urandom | base64; } > /c/\$d/\$i.o; done; done; echo yes > /c/done; }",
         [cache("/c").id("objects")]);
EOF
}
ctx_a=$work/a/ctx
ctx_b=$work/b/elsewhere/ctx
mkdir -p "$ctx_a" "$ctx_b"
kilnfile v1 > "$ctx_a/Kilnfile"
kilnfile v2 > "$ctx_b/Kilnfile"
cache=$work/cache
with="type=local,dest=$cache,cache-mounts=true"
plain="type=local,dest=$work/plain"

echo "== cold build filling the mount, then the first export with cache-mounts=true"
"$KILN" build "$ctx_a" --progress plain >/dev/null 2>&1
echo "mount: $(du -sh "$KILN_HOME/cache-mounts" | cut -f1)"
/usr/bin/time -f "first export (build CACHED + tar + zstd): %e s wall, %U s user, %S s sys" \
  "$KILN" build "$ctx_a" --progress plain --cache-to "$with" 2>&1 | grep -E '^cache export|export \('
"$KILN" build "$ctx_a" --progress plain --cache-to "$plain" >/dev/null 2>&1
ls -l "$cache/blobs/sha256" | awk '$5 > 5000000 {print "mount blob: " $5 " bytes"}'

echo "== re-export after a no-op build"
"$KILN" build "$ctx_a" --progress plain --cache-to "$with" 2>&1 | grep -E '^cache export'
rm -f "$KILN_HOME"/cache-mounts/*/exported.json
"$KILN" build "$ctx_a" --progress plain --cache-to "$with" 2>&1 | grep -E '^cache export'
# --prepare and -n pair with the commands by position
hyperfine -N --style basic --warmup 1 --runs "$RUNS" \
  -n "no-op build, --cache-to without cache mounts" \
  -n "no-op build, --cache-to cache-mounts=true (unchanged mount)" \
  -n "no-op build, --cache-to cache-mounts=true (fingerprint note removed: re-tar)" \
  --prepare true --prepare true \
  --prepare "sh -c 'rm -f $KILN_HOME/cache-mounts/*/exported.json'" \
  "$KILN build $ctx_a --cache-to $plain" \
  "$KILN build $ctx_a --cache-to $with" \
  "$KILN build $ctx_a --cache-to $with" --export-json "$work/noop.json" >/dev/null 2>&1
medians "$work/noop.json"

echo "== fresh runner whose step re-runs"
# import needs the base image in the fresh store; the step re-runs (v2)
prep() {
  echo "rm -rf $work/home-b && KILN_HOME=$work/home-b $KILN import $root -t bb:1"
}
KILN_HOME=$work/home-b bash -c "$(prep) >/dev/null"
KILN_HOME=$work/home-b "$KILN" build "$ctx_b" --progress plain \
  --cache-from "type=local,src=$cache" 2>&1 | grep -E 'restored|^cache import' | sed 's/^.*| //'
hyperfine -N --style basic --runs "$RUNS" \
  -n "fresh runner, step re-runs with the imported mount" \
  -n "fresh runner, step re-runs and fills the mount itself" \
  --prepare "sh -c '$(prep) >/dev/null'" \
  "env KILN_HOME=$work/home-b $KILN build $ctx_b --cache-from type=local,src=$cache" \
  "env KILN_HOME=$work/home-b $KILN build $ctx_b --cache-from type=local,src=$cache,cache-mounts=false" \
  --export-json "$work/fresh.json" >/dev/null 2>&1
medians "$work/fresh.json"
