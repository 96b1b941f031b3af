#!/usr/bin/env bash
# Pull a ~500 MB image (5 incompressible 100 MB layers) from Debian's
# docker-registry on 127.0.0.1: `kiln pull` into an empty store against
# `skopeo copy` into an OCI directory, side by side with hyperfine.
#
#   cargo build --release -p kiln-cli
#   bash crates/kiln-registry/benches/pull-vs-skopeo.sh [path/to/kiln]
set -euo pipefail
KILN=${1:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release/kiln}
LAYERS=${LAYERS:-5}
MB=${MB:-100}
work=$(mktemp -d)
reg_pid=
trap 'kill $reg_pid 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=../../../.ci/local-registry.sh
source "$(dirname "$0")/../../../.ci/local-registry.sh"
start_local_registry "$work"

# An OCI layout with LAYERS random layers, marked gzip so skopeo pushes them as they are.
lay=$work/layout
mkdir -p "$lay/blobs/sha256"
python3 - "$lay" "$LAYERS" "$MB" <<'PY'
import hashlib, json, os, sys
lay, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{lay}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
layers = []
for i in range(n):
    b = b"\x1f\x8b" + os.urandom(mb * 1024 * 1024)
    layers.append(dict(put(b), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
cfg = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
man = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}).encode())
json.dump({"schemaVersion": 2, "manifests": [dict(man, mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "big"})]}, open(f"{lay}/index.json", "w"))
open(f"{lay}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
skopeo copy -q --dest-tls-verify=false "oci:$lay:big" "docker://127.0.0.1:$port/bench/big:1"
rm -rf "$lay"

hyperfine --warmup 1 --runs 5 --export-json "$work/times.json" \
  --prepare "rm -rf $work/kiln $work/oci" \
  -n "kiln pull" "KILN_HOME=$work/kiln $KILN pull -q 127.0.0.1:$port/bench/big:1" \
  -n "skopeo copy" "skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$port/bench/big:1 oci:$work/oci:big"
python3 - "$work/times.json" <<'PY'
import json, statistics, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"median {r['command']}: {statistics.median(r['times']):.3f} s")
PY
rm -rf "$work/kiln"
/usr/bin/time -f "kiln pull peak RSS: %M KiB" env KILN_HOME="$work/kiln" "$KILN" pull -q "127.0.0.1:$port/bench/big:1" >/dev/null
