#!/usr/bin/env bash
# Builds this example end to end and runs the image with podman:
#   1. a one-file builder image: /bin/busybox of Debian's busybox-static,
#      imported with `kiln import` as `busybox:local`;
#   2. `kiln build`: the run step executes in a rootless sandbox, its output
#      is copied onto the static base, the image is exported as an OCI archive;
#   3. `podman run` (runtime runc, see ../../shared/PEERS.md) prints the line.
# Needs what .ci/setup installs. KILN (default target/release/kiln) and
# KILN_HOME (default a temp dir) can be set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KILN=${KILN:-$here/../../target/release/kiln}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KILN_HOME=${KILN_HOME:-$work/home}

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
"$KILN" import "$work/rootfs" -t busybox:local >/dev/null

"$KILN" build "$here" -t busybox-hello:latest --progress plain \
  -o type=oci,dest="$work/hello.tar"

cat > "$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
CONTAINERS_CONF="$work/containers.conf" podman run --rm "oci-archive:$work/hello.tar"
