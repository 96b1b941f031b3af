#!/usr/bin/env bash
# Issue 5's performance section, side by side in one run (hyperfine, medians):
#   1. fully cached no-op rebuild of examples/go-hello: kiln vs
#      `buildah bud --layers` on bench/go-hello.Dockerfile (same builder image);
#   2. cold build: kiln (--no-cache, builder image already local) vs the same
#      commands by hand in a chroot of the same debootstrap rootfs;
#   3. rebuild after a real edit of main.go: kiln vs `go build` alone (in that
#      chroot, with an empty Go build cache, as kiln's step has);
#   4. kiln's peak RSS during a cold build (/usr/bin/time -v).
# Run as root on a machine set up by .ci/setup. KILN defaults to
# target/release/kiln (`cargo build --release -p kiln-cli`); RUNS_COLD (3),
# RUNS (10) and SKIP (comma list of 1,2,3,4) can be set. Results go to
# stdout and to $OUT (default /tmp/kiln-bench-e2e) as hyperfine JSON.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
RUNS=${RUNS:-10}
RUNS_COLD=${RUNS_COLD:-3}
SKIP=${SKIP:-}
OUT=${OUT:-/tmp/kiln-bench-e2e}
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln-cli" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (chroot, buildah, debootstrap)" >&2; exit 1; }
skip() { [[ ",$SKIP," == *",$1,"* ]]; }

rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d /var/tmp/kiln-bench-e2e.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; fi
  umount "$work/chroot/proc" 2>/dev/null || true
  buildah --root "$work/buildah" --runroot "$work/buildah-run" rm -a >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "# kiln $(git -C "$repo" rev-parse --short HEAD) ($(git -C "$repo" status --porcelain | wc -l) uncommitted paths), $(date -u +%FT%TZ)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

# The builder image, served as kiln's tests do.
rootfs=$(bash "$repo/.ci/builder-image.sh")
source "$repo/.ci/local-registry.sh"
start_local_registry "$work"
export KILN_HOME=$work/kiln
"$KILN" import "$rootfs" -t debian-builder:bookworm >/dev/null
"$KILN" push -q debian-builder:bookworm "127.0.0.1:$port/library/debian:bookworm" >/dev/null
mirror="docker.io=127.0.0.1:$port"
builder="127.0.0.1:$port/library/debian:bookworm"

ctx=$work/ctx
cp -r "$repo/examples/go-hello" "$ctx"
rm -f "$ctx/demo.sh"
kiln_build="$KILN build $ctx --registry-mirror $mirror --progress plain"

# buildah as root with its own storage, runc (crun fails here, PEERS.md)
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$work/containers.conf
buildah_bud="buildah --root $work/buildah --runroot $work/buildah-run --storage-driver overlay bud --layers --quiet --network host --tls-verify=false --build-arg BUILDER=$builder -f $repo/bench/go-hello.Dockerfile -t go-hello-buildah $ctx"

# The chroot baseline: the same rootfs, the Kilnfile's commands by hand.
chroot_reset="rm -rf $work/chroot && cp -a $rootfs $work/chroot && cp /etc/resolv.conf $work/chroot/etc/resolv.conf && mkdir -p $work/chroot/src && cp $ctx/main.go $work/chroot/src/"
chroot_cmd() {
  echo "unshare -m sh -c 'mount -t proc proc $work/chroot/proc && chroot $work/chroot /usr/bin/env CGO_ENABLED=0 HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c \"$1\"'"
}
chroot_cold=$(chroot_cmd "apt-get update -qq && apt-get install -y -qq --no-install-recommends golang-go >/dev/null && cd /src && go build -trimpath -ldflags=\\\"-s -w\\\" -o /hello main.go")
chroot_go=$(chroot_cmd "cd /src && go build -trimpath -ldflags=\\\"-s -w\\\" -o /hello main.go")

# A real edit, new every run (a fresh number in the greeting): flipping
# between two versions would hit kiln's cache from the third run on.
cat >"$work/edit.sh" <<'EOF'
#!/bin/sh
# sets the greeting of $1/main.go to "... built by kiln NANOSECONDS"
sed -i "s/built by kiln[ 0-9]*\")/built by kiln $(date +%s%N)\")/" "$1/main.go"
grep -q "built by kiln [0-9]" "$1/main.go" || { echo "edit.sh: no greeting in $1/main.go" >&2; exit 1; }
EOF
chmod +x "$work/edit.sh"

echo "# warm-up: first kiln build (and buildah build for 1)"
$kiln_build >/dev/null 2>"$work/kiln-first.log"
skip 1 || $buildah_bud >/dev/null 2>"$work/buildah-first.log"

if ! skip 1; then
  echo "## 1. fully cached no-op rebuild"
  hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$OUT/noop.json" \
    -n "kiln build (no-op)" "$kiln_build" \
    -n "buildah bud --layers (no-op)" "$buildah_bud"
fi

if ! skip 2; then
  echo "## 2. cold build (builder image local, nothing cached)"
  bash -c "$chroot_reset"
  hyperfine --runs "$RUNS_COLD" --export-json "$OUT/cold.json" \
    --prepare "$chroot_reset" \
    -n "chroot by hand" "$chroot_cold" \
    -n "kiln build --no-cache" "$kiln_build --no-cache"
fi

if ! skip 3; then
  echo "## 3. rebuild after a real edit of main.go"
  # the chroot keeps golang-go from the cold run; make sure it has it
  if ! [ -x "$work/chroot/usr/bin/go" ]; then
    bash -c "$chroot_reset"
    bash -c "$chroot_cold"
  fi
  hyperfine --runs "$RUNS" --export-json "$OUT/edit.json" \
    -n "go build alone (chroot, empty GOCACHE)" \
    --prepare "$work/edit.sh $work/chroot/src && rm -rf $work/chroot/root/.cache/go-build" "$chroot_go" \
    -n "kiln build after editing main.go" \
    --prepare "$work/edit.sh $ctx" "$kiln_build"
fi

if ! skip 4; then
  echo "## 4. peak RSS of a cold kiln build"
  # time -v reports the largest of kiln and every descendant it waited for,
  # which includes the sandboxed apt-get and go compiler: an upper bound
  /usr/bin/time -v $kiln_build --no-cache >/dev/null 2>"$work/time.log"
  grep -E "Maximum resident|Elapsed" "$work/time.log" | sed 's/^\s*/time -v (kiln and its steps): /'
  # kiln's own high-water mark: VmHWM of the kiln process, read until it
  # exits (monotonic, so the last reading is the peak up to ~0.1 s before exit)
  $kiln_build --no-cache >/dev/null 2>&1 &
  pid=$!
  hwm=0
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
    sleep 0.1
  done
  wait "$pid"
  echo "kiln process VmHWM: $hwm kB ($((hwm / 1024)) MiB)"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# hyperfine prints means; the medians are in its JSON
if command -v python3 >/dev/null; then
  python3 - "$OUT"/*.json <<'PY'
import json, sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        print(f"median {r['median']:.4f} s  {r['command']}")
PY
fi
