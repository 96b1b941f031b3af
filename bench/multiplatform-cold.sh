#!/usr/bin/env bash
# Multi-platform without emulation (issue 18), side by side with BuildKit
# v0.32.2 on the same machine, interleaved, cold each time (kiln: a fresh
# KILN_HOME; BuildKit: `buildctl prune --all`):
#  1. kiln: examples/go-hello for linux/amd64 only;
#  2. kiln: examples/go-hello for linux/amd64,linux/arm64 (one OCI index:
#     the builder and apt-get run once on the build platform, `go build`
#     per target with GOARCH);
#  3. BuildKit: bench/go-hello-cross.Dockerfile (`FROM
#     --platform=$BUILDPLATFORM`, `GOARCH=$TARGETARCH`) with
#     `--opt platform=linux/amd64,linux/arm64`, dockerfile.v0, runc worker;
# then no-op rebuilds of 2. and 3. The Debian builder comes from a loopback
# registry both use as docker.io's mirror; golang-go from deb.debian.org.
#   bench/multiplatform-cold.sh [COLD_ROUNDS] [NOOP_PAIRS]
# Needs root and a release `kiln` (cargo build --release -p kiln-cli).
set -euo pipefail
cold_rounds=${1:-3}
noop_pairs=${2:-10}
. "$(dirname "$0")/lib.sh"

start_registry
start_buildkitd
push_builder

ctx=$work/ctx
mkdir -p "$ctx"
cp "$root/examples/go-hello/Kilnfile" "$root/examples/go-hello/main.go" "$ctx/"
cp "$root/bench/go-hello-cross.Dockerfile" "$ctx/Dockerfile"
kiln_build() { # KILN_HOME PLATFORMS
    KILN_HOME=$1 "$kiln" build --registry-mirror "docker.io=$reg" --platform "$2" \
        --metadata-file "$work/meta.json" \
        -o "type=oci,dest=$work/k.tar" "$ctx" >/dev/null 2>"$work/k.err" \
        || { cat "$work/k.err" >&2; exit 1; }
}
# The steps of the last kiln build that took over 0.5 s (from its
# --metadata-file: each step once, with its platform when it has one).
slow_steps() {
    python3 - "$work/meta.json" <<'PY' >&2
import json, sys
m = json.load(open(sys.argv[1]))
steps = {s["vertex"]: s for s in m["steps"]}
for p in m.get("platforms", []):
    for s in p["steps"]:
        steps.setdefault(s["vertex"], s)
for s in sorted(steps.values(), key=lambda s: -s["duration_ms"]):
    if s["duration_ms"] >= 500 and not s["cached"]:
        print(f'    {s["duration_ms"] / 1000:6.2f} s  {s["name"]}')
PY
}
bk_build() {
    bctl build --progress plain --frontend dockerfile.v0 --local "context=$ctx" --local "dockerfile=$ctx" \
        --opt platform=linux/amd64,linux/arm64 \
        --output "type=oci,dest=$work/b.tar" >/dev/null 2>"$work/b.err" \
        || { cat "$work/b.err" >&2; exit 1; }
}
# The same for the last BuildKit build, from its plain progress: each
# step's `#N DONE` time under its `#N [stage n/m] INSTRUCTION` line.
bk_slow_steps() {
    awk '/^#[0-9]+ \[/ { n = $1; sub(/^#[0-9]+ /, ""); name[n] = substr($0, 1, 90) }
         /^#[0-9]+ DONE [0-9.]+s$/ { t = $3; sub(/s$/, "", t); if (t + 0 >= 0.5 && ($1 in name)) printf "    %6.2f s  %s\n", t, name[$1] }' \
        "$work/b.err" >&2
}
since() { local t1=$EPOCHREALTIME; awk "BEGIN{print $t1 - $1}"; }
: > "$work/cold-one"; : > "$work/cold-two"; : > "$work/cold-bk"
for i in $(seq "$cold_rounds"); do
    rm -rf "$work/kh1"
    t0=$EPOCHREALTIME; kiln_build "$work/kh1" linux/amd64; t=$(since "$t0")
    echo "cold kiln amd64 $t" >&2; echo "$t" >> "$work/cold-one"; slow_steps
    rm -rf "$work/kh2"
    t0=$EPOCHREALTIME; kiln_build "$work/kh2" linux/amd64,linux/arm64; t=$(since "$t0")
    echo "cold kiln amd64+arm64 $t" >&2; echo "$t" >> "$work/cold-two"; slow_steps
    bctl prune --all >/dev/null
    t0=$EPOCHREALTIME; bk_build; t=$(since "$t0")
    echo "cold buildkit amd64+arm64 $t" >&2; echo "$t" >> "$work/cold-bk"; bk_slow_steps
done
# the two images of each: one index, both platforms
skopeo inspect --raw "oci-archive:$work/k.tar" | python3 -c 'import json,sys; print("kiln index:", [m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"]])'
python3 - "$work/b.tar" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
m = idx["manifests"][0]
if m["mediaType"].endswith("index.v1+json"):
    inner = json.load(t.extractfile("blobs/sha256/" + m["digest"].split(":")[1]))
    print("buildkit index:", [x["platform"]["architecture"] for x in inner["manifests"]])
else:
    print("buildkit index:", [x.get("platform", {}).get("architecture") for x in idx["manifests"]])
PY
: > "$work/noop-kiln"; : > "$work/noop-bk"
for i in $(seq "$noop_pairs"); do
    settle; t0=$EPOCHREALTIME; kiln_build "$work/kh2" linux/amd64,linux/arm64; t1=$EPOCHREALTIME
    awk "BEGIN{print $t1 - $t0}" >> "$work/noop-kiln"
    settle; t0=$EPOCHREALTIME; bk_build; t1=$EPOCHREALTIME
    awk "BEGIN{print $t1 - $t0}" >> "$work/noop-bk"
done
one=$(median < "$work/cold-one"); two=$(median < "$work/cold-two"); bk=$(median < "$work/cold-bk")
echo "cold median ($cold_rounds rounds): kiln amd64 $one s, kiln amd64+arm64 $two s ($(awk "BEGIN{printf \"%.2f\", $two / $one}")x), buildkit amd64+arm64 $bk s"
echo "no-op median ($noop_pairs pairs): kiln amd64+arm64 $(median < "$work/noop-kiln") s, buildkit $(median < "$work/noop-bk") s"
