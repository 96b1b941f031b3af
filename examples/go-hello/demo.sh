#!/usr/bin/env bash
# kiln's main job, end to end, on a machine without Docker Hub:
#   1. the Debian bookworm builder image: `debootstrap --variant=minbase`
#      (.ci/builder-image.sh, cached under /var/cache/kiln-ci after the first
#      run), imported with `kiln import` and pushed with `kiln push` to
#      Debian's docker-registry on 127.0.0.1 as library/debian:bookworm;
#   2. `kiln build` of this directory with `--registry-mirror
#      docker.io=127.0.0.1:PORT`, so the Kilnfile keeps its real
#      `docker.io/library/debian:bookworm`: apt-get installs golang-go from
#      Debian's mirror in the rootless sandbox, `go build` makes a static
#      binary, and only that binary is copied onto the built-in static base;
#   3. `podman run` (runtime runc, see ../../shared/PEERS.md) of the exported
#      OCI archive prints the greeting.
# Run as root once (debootstrap); needs what .ci/setup installs. KILN
# (default target/release/kiln) can be set; KILN_HOME defaults to
# ~/.cache/kiln-demo, so a second run finds everything cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
export KILN_HOME=${KILN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-demo}
[ -x "$KILN" ] || { echo "demo: no kiln binary at $KILN: run \`cargo build --release\` first" >&2; exit 1; }

work=$(mktemp -d)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== builder image (debootstrap --variant=minbase bookworm, cached)" >&2
rootfs=$(bash "$repo/.ci/builder-image.sh")

source "$repo/.ci/local-registry.sh"
start_local_registry "$work"

"$KILN" import "$rootfs" -t debian-builder:bookworm >/dev/null
"$KILN" push -q debian-builder:bookworm "127.0.0.1:$port/library/debian:bookworm" >/dev/null

echo "== kiln build examples/go-hello" >&2
"$KILN" build "$here" -t go-hello:latest --progress plain \
  --registry-mirror "docker.io=127.0.0.1:$port" \
  -o type=oci,dest="$work/go-hello.tar"

echo "== podman run" >&2
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
CONTAINERS_CONF="$work/containers.conf" podman run --rm --network none "oci-archive:$work/go-hello.tar"
