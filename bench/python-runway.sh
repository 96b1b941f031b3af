#!/usr/bin/env bash
# examples/python-app the kiln way against the RUN way (issue #15,
# performance item 2), interleaved, medians:
#  1. kiln:     the example's Kilnfile (`static_base()` + a python3
#               package set, no RUN in the final stage);
#  2. kiln:     bench/python-runway.Dockerfile (the same builder stage, a
#               final stage `FROM debian:bookworm` + `apt-get install
#               python3`);
#  3. BuildKit: the same Dockerfile (dockerfile.v0, runc worker).
# Two kinds of cold, both with the loopback registry (serving the
# debootstrapped builder as docker.io/library/debian:bookworm) and
# deb.debian.org reachable, no HTTP cache in between:
#  - "all cold":   an empty KILN_HOME / `buildctl prune --all` before each
#                  build, so the builder stage (apt-get python3-pip, pip
#                  install from the example's wheels) runs every time too;
#  - "final cold": the same, then the builder stage alone built first
#                  (untimed: kiln `--target build`, BuildKit
#                  `--opt target=build`), so the timed build is the final
#                  stage: the part that differs between the two ways.
# Image sizes: the layers' compressed bytes (what a pull moves) and
# uncompressed bytes (what the image takes on disk).
#   bench/python-runway.sh [ROUNDS]
# Needs root (the builder image is debootstrapped, buildkitd) and a release
# `kiln` (cargo build --release -p kiln-cli). Run under the cargo lock.
set -euo pipefail
rounds=${1:-3}
. "$(dirname "$0")/lib.sh"

start_registry
start_buildkitd
push_builder

ctx=$work/ctx
cp -r "$root/examples/python-app" "$ctx"
rm -f "$ctx/Kilnfile.lock"
cp "$root/bench/python-runway.Dockerfile" "$ctx/Dockerfile"

kiln_build() { # KILN_HOME FILE OUT [ARGS...]
    local home=$1 file=$2 out=$3
    shift 3
    KILN_HOME=$home "$kiln" build --registry-mirror "docker.io=$reg" -f "$ctx/$file" \
        -o "type=oci,dest=$out" "$@" "$ctx" >/dev/null 2>"$work/k.err" \
        || { cat "$work/k.err" >&2; exit 1; }
}
bk_build() { # OUT [ARGS...]
    local out=$1
    shift
    bctl build --frontend dockerfile.v0 --local "context=$ctx" --local "dockerfile=$ctx" \
        --output "type=oci,dest=$out" "$@" >/dev/null 2>"$work/b.err" \
        || { cat "$work/b.err" >&2; exit 1; }
}
since() { awk "BEGIN{print $(now) - $1}"; }

for kind in all final; do
    : > "$work/$kind-kpkg"; : > "$work/$kind-krun"; : > "$work/$kind-bk"
    for i in $(seq "$rounds"); do
        rm -rf "$work/kh"
        [ "$kind" = final ] && kiln_build "$work/kh" Kilnfile "$work/x.tar" --target build
        t0=$(now); kiln_build "$work/kh" Kilnfile "$work/kpkg.tar"; t=$(since "$t0")
        echo "$kind cold kiln packages $t s" >&2; echo "$t" >> "$work/$kind-kpkg"
        rm -rf "$work/kh"
        [ "$kind" = final ] && kiln_build "$work/kh" Dockerfile "$work/x.tar" --target build
        t0=$(now); kiln_build "$work/kh" Dockerfile "$work/krun.tar"; t=$(since "$t0")
        echo "$kind cold kiln RUN way $t s" >&2; echo "$t" >> "$work/$kind-krun"
        bctl prune --all >/dev/null
        [ "$kind" = final ] && bk_build "$work/x.tar" --opt target=build
        t0=$(now); bk_build "$work/bk.tar"; t=$(since "$t0")
        echo "$kind cold buildkit RUN way $t s" >&2; echo "$t" >> "$work/$kind-bk"
    done
    kpkg=$(median < "$work/$kind-kpkg"); krun=$(median < "$work/$kind-krun"); bk=$(median < "$work/$kind-bk")
    echo "$kind cold, median of $rounds: kiln packages $kpkg s; kiln RUN way $krun s ($(awk "BEGIN{printf \"%.1f\", $krun / $kpkg}")x); buildkit RUN way $bk s ($(awk "BEGIN{printf \"%.1f\", $bk / $kpkg}")x)"
done

# the images answer alike, and their sizes
for t in kpkg krun bk; do
    python3 - "$work/$t.tar" "$t" <<'PY'
import gzip, json, sys, tarfile, zlib
t = tarfile.open(sys.argv[1])
def blob(d):
    return t.extractfile("blobs/sha256/" + d.split(":")[1]).read()
m = json.load(t.extractfile("index.json"))["manifests"][0]
man = json.loads(blob(m["digest"]))
if "manifests" in man:
    man = json.loads(blob(man["manifests"][0]["digest"]))
packed = sum(l["size"] for l in man["layers"])
unpacked = 0
for l in man["layers"]:
    b = blob(l["digest"])
    if l["mediaType"].endswith("zstd"):
        import subprocess
        b = subprocess.run(["zstd", "-dc"], input=b, capture_output=True, check=True).stdout
    elif l["mediaType"].endswith("gzip"):
        b = gzip.decompress(b)
    unpacked += len(b)
names = {"kpkg": "kiln packages", "krun": "kiln RUN way", "bk": "buildkit RUN way"}
print(f"{names[sys.argv[2]]}: {len(man['layers'])} layers, {packed / 1e6:.1f} MB compressed, {unpacked / 1e6:.1f} MB uncompressed")
PY
done
