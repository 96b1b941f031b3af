#!/usr/bin/env bash
# The worker's snapshot model (kiln-worker), with busybox images and no
# network, hyperfine medians. Run as root from anywhere:
#   bench/snapshots.sh
# 1. fully cached no-op rebuild of a two-stage build (a busybox builder with
#    run steps, its output copied onto the static base);
# 2. an exec-heavy cold build (`--no-cache`): a builder step writes a big tree
#    (BIG_MB of random data plus 20,000 small files), four more run steps
#    each run over that chain, and one small file is copied onto the static
#    base; next to the same commands by hand in a chroot of a copy of the
#    same busybox rootfs (what issue 5 compares a cold build with);
# 3. with OLD_KILN set (a kiln binary of the tar-per-step worker), case 2 for
#    it too, side by side.
# KILN defaults to target/release/kiln (`cargo build --release -p kiln-cli`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
OLD_KILN=${OLD_KILN:-}
RUNS=${RUNS:-30}
RUNS_COLD=${RUNS_COLD:-5}
BIG_MB=${BIG_MB:-200}
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release -p kiln-cli" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (chroot baseline)" >&2; exit 1; }

W=$(mktemp -d /var/tmp/kiln-bench-snap.XXXXXX)
trap 'rm -rf "$W"' EXIT
echo "# kiln $(git -C "$repo" rev-parse --short HEAD), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

mkdir -p "$W"/rootfs/{bin,etc,tmp,root} "$W/ctx"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$W/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$W/rootfs/etc/passwd"
printf 'root:x:0:\n' >"$W/rootfs/etc/group"

# the big step: BIG_MB of incompressible data, 20,000 small files
big="mkdir -p /big/s && head -c $((BIG_MB * 1048576)) /dev/urandom > /big/blob && i=0 && while [ \$i -lt 20000 ]; do echo \$i > /big/s/\$i; i=\$((i+1)); done"
cat >"$W/ctx/Kilnfile" <<EOF
let build = image("bb:1")
    .run("$big")
    .run("echo 2 > /s2 && ls /big/s | wc -l > /count")
    .run("echo 3 > /s3 && cat /count")
    .run("echo 4 > /s4 && md5sum /big/s/1 > /sum")
    .run("echo 5 > /out && cat /s2 /s3 /s4 /sum >> /out");

let app = static_base()
    .copy(build.path("/out"), "/out")
    .copy(build.path("/bin/busybox"), "/bin/busybox")
    .entrypoint(["/bin/busybox", "cat", "/out"]);
EOF
steps=("$big" "echo 2 > /s2 && ls /big/s | wc -l > /count" "echo 3 > /s3 && cat /count"
  "echo 4 > /s4 && md5sum /big/s/1 > /sum" "echo 5 > /out && cat /s2 /s3 /s4 /sum >> /out")

medians() { # hyperfine JSON -> "name: median"
  python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %s: %.1f ms" % (r["command"], r["median"] * 1000))' "$1"
}

prep() { # $1: binary, $2: home
  rm -rf "$2"
  KILN_HOME=$2 "$1" import "$W/rootfs" -t bb:1 >/dev/null
}

echo "## 1. no-op rebuild (every step CACHED)"
prep "$KILN" "$W/home"
KILN_HOME=$W/home "$KILN" build "$W/ctx" >/dev/null 2>&1
KILN_HOME=$W/home hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/noop.json" \
  -n "kiln build (no-op)" "$KILN build $W/ctx"
medians "$W/noop.json"
du -sh "$W/home/blobs" "$W/home/snapshots"

echo "## 2. exec-heavy cold build"
# by hand: the same five commands, each its own chroot (with the host's
# /dev bound, as the sandbox has devices), on a fresh copy of the rootfs
mkdir -p "$W/steps"
n=0
for s in "${steps[@]}"; do
  n=$((n + 1))
  printf '%s\n' "$s" >"$W/steps/$n.sh"
done
{
  echo "#!/bin/sh"
  echo "set -e"
  echo "rm -rf $W/chroot && cp -a $W/rootfs $W/chroot && mkdir -p $W/chroot/dev && cp $W/steps/*.sh $W/chroot/"
  for i in $(seq 1 "$n"); do
    echo "unshare -m sh -c 'mount --rbind /dev $W/chroot/dev && chroot $W/chroot /bin/sh /$i.sh'"
  done
} >"$W/by-hand.sh"
chmod +x "$W/by-hand.sh"
cmds=(-n "chroot by hand" "$W/by-hand.sh"
  -n "kiln build --no-cache" "env KILN_HOME=$W/home $KILN build $W/ctx --no-cache")
if [ -n "$OLD_KILN" ]; then
  prep "$OLD_KILN" "$W/home-old"
  cmds+=(-n "tar-per-step kiln build --no-cache" "env KILN_HOME=$W/home-old $OLD_KILN build $W/ctx --no-cache")
fi
hyperfine --runs "$RUNS_COLD" --export-json "$W/cold.json" "${cmds[@]}"
medians "$W/cold.json"

echo "## 3. peak RSS of a cold kiln build"
/usr/bin/time -v env KILN_HOME="$W/home" "$KILN" build "$W/ctx" --no-cache >/dev/null 2>"$W/time.log"
grep -E "Maximum resident|Elapsed" "$W/time.log"
du -sh "$W/home/blobs"
echo "# load at end $(cut -d' ' -f1-3 /proc/loadavg)"
