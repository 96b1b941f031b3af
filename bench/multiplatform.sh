#!/usr/bin/env bash
# No-op rebuild of a two-platform build (linux/amd64,linux/arm64) side by
# side with the single-platform one, interleaved (one run of each per
# round, hyperfine), on a Kilnfile of file operations only (no emulation:
# the static base, a context copy, a file written per target platform).
# KILN defaults to target/release/kiln; RUNS (30).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
RUNS=${RUNS:-30}
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln-cli" >&2; exit 1; }
work=$(mktemp -d /tmp/kiln-bench-mp.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ctx"
head -c 1048576 /dev/urandom > "$work/ctx/payload.bin"
cat > "$work/ctx/Kilnfile" <<'KILN'
let shared = scratch().file("/shared.txt", "the same for every platform\n");
let app = static_base()
    .copy(shared.path("/shared.txt"), "/shared.txt")
    .copy(context().path("payload.bin"), "/payload.bin")
    .file("/platform", format!("{}", target_platform()))
    .label("arch", target_platform().arch());
KILN
export KILN_HOME="$work/home"
one="$KILN build --progress quiet --platform linux/amd64 -t mp:one $work/ctx"
two="$KILN build --progress quiet --platform linux/amd64,linux/arm64 -t mp:two $work/ctx"
$one >/dev/null
$two >/dev/null
sync
for i in $(seq "$RUNS"); do
  for c in one two; do
    cmd=${!c}
    s=$(date +%s%N); $cmd >/dev/null; e=$(date +%s%N)
    echo "$c $(( (e - s) / 1000 ))" >> "$work/times"
  done
done
for c in one two; do
  awk -v c="$c" '$1 == c { print $2 }' "$work/times" | sort -n |
    awk -v c="$c" '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
      printf "%s: median %.1f ms (min %.1f, max %.1f, %d runs)\n", c, m / 1000, a[1] / 1000, a[NR] / 1000, NR }'
done
