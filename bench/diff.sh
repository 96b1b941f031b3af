#!/usr/bin/env bash
# Diff benchmark (issue 3): an upper directory of 10,000 small files (100
# dirs x 100 files, as bench/runtime.sh makes it) into a layer tar piped to
# sha256sum, side by side with `tar --sort=name -cf - DIR | sha256sum`.
# Prints hyperfine medians (wall) and the producers' own CPU time (perf
# stat, user + sys, the consumer excluded), which is the fairer number on a
# shared machine. Run from anywhere:
#   bash bench/diff.sh            # RUNS=50 by default
# Needs hyperfine and perf (optional: CPU lines are skipped without it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
RUNS=${RUNS:-50}

cargo build --release -q -p kiln-runtime --bin kiln-runtime-helper
HELPER=$CARGO_TARGET_DIR/release/kiln-runtime-helper

W=$(mktemp -d /tmp/kiln-diff-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
D=$W/files
for i in $(seq 0 99); do
  mkdir -p "$D/d$i"
  for j in $(seq 0 99); do printf 'file %d %d\n' "$i" "$j" > "$D/d$i/f$j"; done
done

KILN_CMD="$HELPER diff $D | sha256sum"
TAR_CMD="tar --sort=name -cf - -C $D . | sha256sum"
echo "## 10,000 small files: layer tar | sha256sum (wall, $RUNS runs)"
hyperfine --warmup 5 --runs "$RUNS" --export-json "$W/diff.json" \
  -n "kiln-layer write_tar | sha256sum" "$KILN_CMD" \
  -n "tar --sort=name | sha256sum" "$TAR_CMD" >/dev/null
python3 -c 'import json,statistics,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %7.1f ms  (user %5.1f ms, sys %5.1f ms mean, with sha256sum)  %s" % (
        statistics.median(r["times"]) * 1000, r["user"] * 1000, r["system"] * 1000, r["command"]))' "$W/diff.json"

if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
  echo "## producers alone, writing into a pipe (perf stat, $RUNS runs, mean)"
  cpu() {
    local name=$1; shift
    perf stat -o "$W/ps.txt" -r "$RUNS" -e task-clock,user_time,system_time "$@" | cat >/dev/null
    awk -v n="$name" '/task-clock/ {t=$1} /user_time/ {u=$1/1e6} /system_time/ {s=$1/1e6}
      END {printf "cpu %7.1f ms  (user %5.1f ms, sys %5.1f ms)  %s\n", t, u, s, n}' "$W/ps.txt"
  }
  cpu "kiln-layer write_tar" "$HELPER" diff "$D"
  cpu "tar --sort=name" tar --sort=name -cf - -C "$D" .
fi
