#!/usr/bin/env bash
# End to end for the frontend image: a local docker-registry, `build-image.sh`
# (static kiln-frontend, `kiln build` onto the static base, push of :latest
# and :VERSION), then skopeo reads the pushed config and podman runs the
# image (with no gateway on its stdin the frontend must fail cleanly, which
# shows the static binary runs on the static base).
#   frontend/gateway/image-e2e.sh [KILN]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
reg_pid=
cleanup() {
  status=$?
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work" || true
  exit "$status"
}
trap cleanup EXIT
source "$here/../../.ci/local-registry.sh"
start_local_registry "$work"
export KILN_HOME=$work/home
"$here/build-image.sh" "127.0.0.1:$port" "$@"
version=$(cargo pkgid -p kiln-frontend-gateway | sed 's/.*[#@]//')
for tag in latest "$version"; do
  cfg=$(skopeo inspect --tls-verify=false --config "docker://127.0.0.1:$port/kiln-frontend:$tag")
  echo "$cfg" | grep -q '"/usr/local/bin/kiln-frontend"' || { echo "no entrypoint in :$tag: $cfg" >&2; exit 1; }
  echo "$cfg" | grep -q '"User": *"65532"' || { echo "not non-root in :$tag: $cfg" >&2; exit 1; }
done
# podman as root here: runc, cgroupfs, private storage (see PEERS.md).
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$work/containers.conf
set +e
out=$(podman --root "$work/storage" --runroot "$work/run" --tmpdir "$work/tmp" run --rm \
  --tls-verify=false -i "127.0.0.1:$port/kiln-frontend:latest" </dev/null 2>&1 >/dev/null)
status=$?
set -e
echo "$out"
[ "$status" -ne 0 ] && echo "$out" | grep -q "the gateway's Ping call failed" || { echo "unexpected run: $status" >&2; exit 1; }
echo "ok: 127.0.0.1:$port/kiln-frontend:latest and :$version"
