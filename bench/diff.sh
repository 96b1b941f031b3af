#!/usr/bin/env bash
# Diff benchmark (issue 3): an upper directory of 10,000 small files (100
# dirs x 100 files, as bench/runtime.sh makes it) into a layer tar piped to
# sha256sum, side by side with `tar --sort=name -cf - DIR | sha256sum`.
# Prints hyperfine medians (wall) and the producers' own CPU time (perf
# stat, user + sys, the consumer excluded), which is the fairer number on a
# shared machine. Run from anywhere:
#   bash bench/diff.sh            # RUNS=50 by default
#   HELPER_BASE=/path/to/old/kiln-runtime-helper bash bench/diff.sh   # plus a baseline
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
# HELPER_BASE=/path/to/older/kiln-runtime-helper adds a baseline line
base=()
if [ -n "${HELPER_BASE:-}" ]; then
  base=(-n "baseline write_tar | sha256sum" "$HELPER_BASE diff $D | sha256sum")
fi
hyperfine --warmup 5 --runs "$RUNS" --export-json "$W/diff.json" \
  -n "kiln-layer write_tar | sha256sum" "$KILN_CMD" \
  -n "tar --sort=name | sha256sum" "$TAR_CMD" "${base[@]}" >/dev/null
python3 -c 'import json,statistics,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %7.1f ms  (user %5.1f ms, sys %5.1f ms mean, with sha256sum)  %s" % (
        statistics.median(r["times"]) * 1000, r["user"] * 1000, r["system"] * 1000, r["command"]))' "$W/diff.json"

# The same commands interleaved (A B A B ...), so load that changes during
# the run hits every command alike: medians of wall and of CPU (user + sys
# of the whole pipeline, sha256sum included, from wait4's rusage).
echo "## interleaved, $RUNS rounds (medians)"
python3 - "$RUNS" "kiln-layer write_tar | sha256sum" "$KILN_CMD" "tar --sort=name | sha256sum" "$TAR_CMD" \
  ${HELPER_BASE:+"baseline write_tar | sha256sum" "$HELPER_BASE diff $D | sha256sum"} <<'PY'
import os, statistics, subprocess, sys, time
runs = int(sys.argv[1]); pairs = list(zip(sys.argv[2::2], sys.argv[3::2]))
wall = {n: [] for n, _ in pairs}; cpu = {n: [] for n, _ in pairs}
for i in range(runs + 3):
    for name, cmd in pairs:
        t = time.perf_counter()
        p = subprocess.Popen(["bash", "-c", cmd + " >/dev/null"])
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        assert status == 0, cmd
        if i >= 3:  # warm-up rounds
            wall[name].append(dt); cpu[name].append(ru.ru_utime + ru.ru_stime)
for name, _ in pairs:
    print("median %7.1f ms wall, %6.1f ms cpu  %s" % (
        statistics.median(wall[name]) * 1000, statistics.median(cpu[name]) * 1000, name))
PY

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
  if [ -n "${HELPER_BASE:-}" ]; then cpu "baseline write_tar" "$HELPER_BASE" diff "$D"; fi
fi
