#!/usr/bin/env bash
# Runtime benchmarks (issue 3), side by side with the peers, medians by
# hyperfine. Run as root from the repository root:
#   bench/runtime.sh            # results on stdout, markdown in target-bench/
# 1. start a sandbox on a busybox-static rootfs, run /bin/true, tear down:
#    kiln-runtime (as root, and as the unprivileged user kilntest) vs
#    `runc run` of the same rootfs as an OCI bundle
# 2. an upper directory of 10,000 small files into a layer tar, piped to
#    sha256sum, vs `tar --sort=name -cf - DIR | sha256sum`
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
USER_RL=${KILN_TEST_USER:-kilntest}
RUNS=${RUNS:-200}

cargo build --release -q -p kiln-runtime --bin kiln-runtime-helper
HELPER=$CARGO_TARGET_DIR/release/kiln-runtime-helper

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
mkdir -p "$W/upper" "$W/user"
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

echo "## sandbox start + /bin/true + teardown"
hyperfine -N --warmup 20 --runs "$RUNS" --export-markdown "$W/start.md" --export-json "$W/start.json" \
  -n "kiln-runtime (root)" "$HELPER run $W/lower $W/upper -- /bin/true" \
  -n "kiln-runtime (rootless, $USER_RL)" "setpriv --reuid=$USER_RL --regid=$USER_RL --init-groups $HELPER run $W/user/lower $W/user/upper -- /bin/true" \
  -n "runc run (root)" "runc --root $W/runc-state run --bundle $W/bundle kiln-bench-$$" \
  -n "setpriv alone (overhead of the rootless line)" "setpriv --reuid=$USER_RL --regid=$USER_RL --init-groups /bin/true" \
  -n "reference: unshare -Urmpf --mount-proc true" "unshare -Urmpf --mount-proc true"
cat "$W/start.md"
medians() {
  python3 -c 'import json,statistics,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %7.1f ms  %s" % (statistics.median(r["times"]) * 1000, r["command"]))' "$1"
}
medians "$W/start.json"

echo "## 10,000 small files: layer tar | sha256sum"
D=$W/files
for i in $(seq 0 99); do
  mkdir -p "$D/d$i"
  for j in $(seq 0 99); do printf 'file %d %d\n' "$i" "$j" > "$D/d$i/f$j"; done
done
hyperfine --warmup 3 --runs 30 --export-markdown "$W/diff.md" --export-json "$W/diff.json" \
  -n "kiln-layer write_tar | sha256sum" "$HELPER diff $D | sha256sum" \
  -n "tar --sort=name | sha256sum" "tar --sort=name -cf - -C $D . | sha256sum"
cat "$W/diff.md"
medians "$W/diff.json"
mkdir -p "$CARGO_TARGET_DIR"
cat "$W/start.md" "$W/diff.md" > "$CARGO_TARGET_DIR/runtime-bench.md"
