#!/usr/bin/env bash
# Runtime benchmarks (issue 3), side by side with the peers, medians by
# hyperfine. Run as root from the repository root, unattended:
#   bash bench/runtime.sh       # results on stdout, markdown in $CARGO_TARGET_DIR
#   RUNS=100 bash bench/runtime.sh
#   SKIP_DIFF=1 bash bench/runtime.sh   # only the start-up part
# 1. start a sandbox on a busybox-static rootfs, run /bin/true, tear down:
#    kiln-runtime as root and as the unprivileged user kilntest, with the
#    kiln binary as the re-executed child when KILN=path/to/kiln is given
#    (built from this same checkout: the child speaks the runtime's
#    protocol), and with --wait-cleanup (also waits
#    until the supervisor removed the state directory, which the runtime
#    does not wait for), next to `runc run` of the same rootfs as an OCI
#    bundle and `unshare -Urmpf --mount-proc true`
# 2. an upper directory of 10,000 small files into a layer tar, piped to
#    sha256sum, vs `tar --sort=name -cf - DIR | sha256sum`
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
USER_RL=${KILN_TEST_USER:-kilntest}
RUNS=${RUNS:-200}

cargo build --release -q -p kiln-runtime --bin kiln-runtime-helper
HELPER=$CARGO_TARGET_DIR/release/kiln-runtime-helper
KILN=${KILN:-}

W=$(mktemp -d /tmp/kiln-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"

# the busybox rootfs, as the tests make it
mk_rootfs() {
  local d=$1
  mkdir -p "$d"/{bin,etc,tmp,root,dev,proc}
  cp /bin/busybox "$d/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$d/etc/passwd"
  printf 'root:x:0:\n' > "$d/etc/group"
}
mk_rootfs "$W/lower"
mkdir -p "$W/upper" "$W/upper2" "$W/upper3" "$W/upper4" "$W/user"
mk_rootfs "$W/user/lower"
mkdir -p "$W/user/upper"
chown -R "$USER_RL:" "$W/user"

# the same rootfs as an OCI bundle for runc
mkdir -p "$W/bundle"
cp -a "$W/lower" "$W/bundle/rootfs"
(cd "$W/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open("config.json", "w"))
PY
)

# every sandbox must work before it is timed
"$HELPER" run "$W/lower" "$W/upper" -- /bin/true
setpriv --reuid="$USER_RL" --regid="$USER_RL" --init-groups "$HELPER" run "$W/user/lower" "$W/user/upper" -- /bin/true
KILN_LINE=()
if [ -n "$KILN" ] && "$HELPER" run "$W/lower" "$W/upper3" --helper "$KILN" -- /bin/true; then
  KILN_LINE=(-n "kiln-runtime (root, kiln binary as the child)" "$HELPER run $W/lower $W/upper3 --helper $KILN -- /bin/true"
    -n "kiln-runtime (root, kiln binary as the child, --wait-cleanup)" "$HELPER run $W/lower $W/upper4 --helper $KILN --wait-cleanup -- /bin/true")
fi

median_table() {
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
ref = sys.argv[2]
med = {r["command"]: statistics.median(r["times"]) * 1000 for r in res}
base = med.get(ref)
print("| command | median | user+sys (mean) | %s / this |" % ref.replace("|", "\\|"))
print("|---|---:|---:|---:|")
for r in res:
    m = med[r["command"]]
    cpu = (r.get("user", 0) + r.get("system", 0)) * 1000
    ratio = "%.1fx" % (base / m) if base else "-"
    name = r["command"].replace("|", "\\|")
    print("| %s | %.1f ms | %.1f ms | %s |" % (name, m, cpu, ratio))
PY
}

# the copies above left dirty pages: their writeback must not land in the
# first lines' timings
sync
echo "## sandbox start + /bin/true + teardown (load: $(cut -d' ' -f1-3 /proc/loadavg))"
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$W/start.json" \
  -n "kiln-runtime (root)" "$HELPER run $W/lower $W/upper -- /bin/true" \
  "${KILN_LINE[@]}" \
  -n "kiln-runtime (rootless, $USER_RL)" "setpriv --reuid=$USER_RL --regid=$USER_RL --init-groups $HELPER run $W/user/lower $W/user/upper -- /bin/true" \
  -n "kiln-runtime (root, --wait-cleanup)" "$HELPER run $W/lower $W/upper2 --wait-cleanup -- /bin/true" \
  -n "runc run (root)" "runc --root $W/runc-state run --bundle $W/bundle kiln-bench-$$" \
  -n "setpriv alone (overhead of the rootless line)" "setpriv --reuid=$USER_RL --regid=$USER_RL --init-groups /bin/true" \
  -n "reference: unshare -Urmpf --mount-proc true" "unshare -Urmpf --mount-proc true" \
  >/dev/null
median_table "$W/start.json" "runc run (root)" | tee "$W/start.md"

# The same commands interleaved (one run of each per round), so a host that
# speeds up or slows down during the run (this VM's does, see
# docs/benchmarks.md) hits every line alike; wall from spawn to reaped
# exit (Python's spawn overhead is in every line), medians.
echo "## interleaved, $RUNS rounds (medians)"
INTER=("kiln-runtime (root)" "$HELPER run $W/lower $W/upper -- /bin/true")
[ ${#KILN_LINE[@]} -gt 0 ] && INTER+=("kiln-runtime (root, kiln binary as the child)" "$HELPER run $W/lower $W/upper3 --helper $KILN -- /bin/true"
  "kiln-runtime (root, kiln binary as the child, --wait-cleanup)" "$HELPER run $W/lower $W/upper4 --helper $KILN --wait-cleanup -- /bin/true")
INTER+=("kiln-runtime (root, --wait-cleanup)" "$HELPER run $W/lower $W/upper2 --wait-cleanup -- /bin/true"
  "runc run (root)" "runc --root $W/runc-state run --bundle $W/bundle kiln-bench-$$"
  "reference: unshare -Urmpf --mount-proc true" "unshare -Urmpf --mount-proc true")
python3 - "$RUNS" "${INTER[@]}" <<'PY' | tee "$W/inter.md"
import os, shlex, statistics, subprocess, sys, time
runs = int(sys.argv[1]); pairs = list(zip(sys.argv[2::2], sys.argv[3::2]))
wall = {n: [] for n, _ in pairs}
for i in range(runs + 10):
    for name, cmd in pairs:
        t = time.perf_counter()
        p = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, _ = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        assert status == 0, cmd
        if i >= 10:  # warm-up rounds
            wall[name].append(dt)
runc = statistics.median(wall["runc run (root)"])
# per-round ratios cancel what the host does between rounds
print("| command (interleaved) | median | runc run (root) / this | median of per-round ratios |")
print("|---|---:|---:|---:|")
for name, _ in pairs:
    m = statistics.median(wall[name])
    r = statistics.median(a / b for a, b in zip(wall["runc run (root)"], wall[name]))
    print("| %s | %.1f ms | %.1fx | %.1fx |" % (name, m * 1000, runc / m, r))
PY
# A build runs its steps through one Runtime in one kiln process: the same,
# N starts per process (`--repeat`, each start timed inside, start to
# return), in rounds alternating with blocks of `runc run`, as BuildKit
# runs one `runc run` process per step.
echo "## in one process, as a build runs its steps (about $RUNS starts each, 20 per process)"
INPROC=("kiln-runtime" "$HELPER run $W/lower $W/upper --repeat 22 -- /bin/true"
  "kiln-runtime, --wait-cleanup" "$HELPER run $W/lower $W/upper2 --wait-cleanup --repeat 22 -- /bin/true"
  "kiln-runtime, rootless ($USER_RL)" "setpriv --reuid=$USER_RL --regid=$USER_RL --init-groups $HELPER run $W/user/lower $W/user/upper --repeat 22 -- /bin/true")
[ ${#KILN_LINE[@]} -gt 0 ] && INPROC+=("kiln binary as the child" "$HELPER run $W/lower $W/upper3 --helper $KILN --repeat 22 -- /bin/true"
  "kiln binary as the child, --wait-cleanup" "$HELPER run $W/lower $W/upper4 --helper $KILN --wait-cleanup --repeat 22 -- /bin/true")
python3 - "$RUNS" "runc --root $W/runc-state run --bundle $W/bundle kiln-bench-$$" "${INPROC[@]}" <<'PY' | tee "$W/inproc.md"
import os, shlex, statistics, subprocess, sys, time
runs = int(sys.argv[1]); runc_cmd = sys.argv[2]; pairs = list(zip(sys.argv[3::2], sys.argv[4::2]))
per = 20
times = {n: [] for n, _ in pairs}; runc = []
for rnd in range(max(runs // per, 1)):
    for name, cmd in pairs:
        # 23 starts per process: the first three (the runtime's probes,
        # cold caches) are dropped
        cmd = cmd.replace("--repeat 22", "--repeat %d" % (per + 3))
        p = subprocess.run(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 0, (cmd, p.stderr)
        us = [int(l.split()[1]) for l in p.stderr.splitlines() if l.startswith("run-us ")]
        times[name] += [u / 1000 for u in us[3:]]
    for _ in range(per):
        t = time.perf_counter()
        q = subprocess.Popen(shlex.split(runc_cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, _ = os.wait4(q.pid, 0)
        assert status == 0, runc_cmd
        runc.append((time.perf_counter() - t) * 1000)
r = statistics.median(runc)
print("| start in one process | median | runc run (%.1f ms, its own process per start) / this |" % r)
print("|---|---:|---:|")
for name, _ in pairs:
    m = statistics.median(times[name])
    print("| %s | %.1f ms | %.1fx |" % (name, m, r / m))
PY
# nothing may be left behind by any of the runs
sleep 1
left=$(find "$W" -maxdepth 2 -name '.kiln-sandbox-*' | wc -l)
echo "state directories left after $RUNS+ runs each: $left"
for u in upper upper2 upper3 upper4 user/upper; do
  [ -z "$(ls -A "$W/$u" 2>/dev/null)" ] || echo "WARNING: $W/$u is not empty"
done

if [ -n "${SKIP_DIFF:-}" ]; then
  mkdir -p "$CARGO_TARGET_DIR"
  cat "$W/start.md" "$W/inter.md" "$W/inproc.md" > "$CARGO_TARGET_DIR/runtime-bench.md"
  exit 0
fi

echo "## 10,000 small files: layer tar | sha256sum"
D=$W/files
for i in $(seq 0 99); do
  mkdir -p "$D/d$i"
  for j in $(seq 0 99); do printf 'file %d %d\n' "$i" "$j" > "$D/d$i/f$j"; done
done
hyperfine --warmup 3 --runs 30 --export-json "$W/diff.json" \
  -n "kiln-layer write_tar | sha256sum" "$HELPER diff $D | sha256sum" \
  -n "tar --sort=name | sha256sum" "tar --sort=name -cf - -C $D . | sha256sum" \
  >/dev/null
median_table "$W/diff.json" "tar --sort=name | sha256sum" | tee "$W/diff.md"
mkdir -p "$CARGO_TARGET_DIR"
cat "$W/start.md" "$W/inter.md" "$W/inproc.md" "$W/diff.md" > "$CARGO_TARGET_DIR/runtime-bench.md"
