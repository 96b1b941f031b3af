# Shared by the benchmarks that run against peers: sourced, not run.
#   . "$(dirname "$0")/lib.sh"
# Sets root, peers, kiln (KILN or target/release/kiln) and a work dir
# removed on exit with every process started here.
root=$(cd "$(dirname "$0")/.." && pwd)
peers=$(cd "$root/../shared/peers/buildkit" && pwd)
kiln=${KILN:-$root/target/release/kiln}
work=$(mktemp -d)
pids=()
bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 2
    rm -rf "$work" 2>/dev/null || true
}
trap bench_cleanup EXIT

# Timed windows read bash's own clock (`t0=$EPOCHREALTIME`): no `date`
# process inside them, whose fork and exec add a millisecond or two to
# every no-op measured.
now() { echo "$EPOCHREALTIME"; }
# Between timed no-op runs: let the previous build's background work
# (buildkitd's after a BuildKit build) end before the next one starts.
settle() { sleep 0.3; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# Debian's docker-registry on loopback (.ci/local-registry.sh): sets `reg`.
# shellcheck source=../.ci/local-registry.sh
source "$root/.ci/local-registry.sh"
start_registry() {
    start_local_registry "$work"
    pids+=("$reg_pid")
    reg=127.0.0.1:$port
}

# BuildKit v0.32.2 as root (runc worker, overlayfs) with docker.io mirrored
# to `reg`; `bctl` is its buildctl.
start_buildkitd() {
    cat > "$work/bk.toml" <<TOML
root = "$work/bk"
[grpc]
  address = ["unix://$work/bk.sock"]
[worker.oci]
  enabled = true
  binary = "runc"
  snapshotter = "overlayfs"
[worker.containerd]
  enabled = false
[registry."$reg"]
  http = true
[registry."docker.io"]
  mirrors = ["$reg"]
TOML
    "$peers/buildkitd" --config "$work/bk.toml" > "$work/bk.log" 2>&1 &
    pids+=($!)
    until bctl debug workers >/dev/null 2>&1; do sleep 0.2; done
}
bctl() { "$peers/buildctl" --addr "unix://$work/bk.sock" "$@"; }

# The debootstrapped Debian builder as `reg`'s library/debian:bookworm.
push_builder() {
    KILN_HOME=$work/import "$kiln" import "$(bash "$root/.ci/builder-image.sh")" -t debian-builder:bookworm >/dev/null
    KILN_HOME=$work/import "$kiln" push -q debian-builder:bookworm "$reg/library/debian:bookworm" >/dev/null
}
