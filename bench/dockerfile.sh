#!/usr/bin/env bash
# Dockerfile input (issue 16), side by side with BuildKit v0.32.2:
#  1. `kiln check` of a generated 2,000-line Dockerfile (hyperfine);
#  2. bench/go-hello.Dockerfile built by `kiln build` and by `buildctl build`
#     (dockerfile.v0, root, runc worker) on the same machine, interleaved:
#     cold (kiln: a fresh KILN_HOME; BuildKit: `buildctl prune --all`), then
#     fully cached no-op rebuilds. The Debian builder comes from a loopback
#     registry both use as docker.io's mirror; golang-go from deb.debian.org.
#   bench/dockerfile.sh [COLD_PAIRS] [CACHED_PAIRS]
# Needs root and a release `kiln` (cargo build --release -p kiln-cli).
set -euo pipefail
cold_pairs=${1:-3}
cached_pairs=${2:-15}
. "$(dirname "$0")/lib.sh"

echo "== kiln check of a generated 2,000-line Dockerfile"
python3 - "$work/big" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
lines = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:bookworm"]
stage = 0
while len(lines) < 2000:
    lines.append(f"FROM ${{BASE}} AS s{stage}")
    lines.append(f"ARG V{stage}=v{stage}")
    for i in range(45):
        k = i % 5
        if k == 0:
            lines.append(f"ENV E{i}=${{V{stage}}}-{i} PATH=/opt/{i}:$PATH")
        elif k == 1:
            lines.append(f"RUN --mount=type=cache,target=/c{i} echo {i} > /f{i} && \\")
            lines.append(f"    cat /f{i}")
        elif k == 2:
            lines.append(f"COPY --chown=1:1 src/{i}.txt /dst/{i}.txt")
        elif k == 3:
            lines.append(f"WORKDIR /w/{i}")
        else:
            lines.append(f'LABEL l{i}="value {i}"')
    if stage > 0:
        lines.append(f"COPY --from=s{stage-1} /f1 /prev")
    stage += 1
open(os.path.join(d, "Dockerfile"), "w").write("\n".join(lines[:2000]) + "\n")
PY
wc -l "$work/big/Dockerfile"
hyperfine -N --warmup 10 --runs 200 "$kiln check -f $work/big/Dockerfile $work/big"

echo "== bench/go-hello.Dockerfile: kiln vs BuildKit"
start_registry
start_buildkitd
push_builder

ctx=$work/ctx
mkdir -p "$ctx"
cp "$root/bench/go-hello.Dockerfile" "$ctx/Dockerfile"
cp "$root/examples/go-hello/main.go" "$ctx/"
kiln_build() {
    KILN_HOME=$1 "$kiln" build --registry-mirror "docker.io=$reg" -o "type=oci,dest=$work/k.tar" "$ctx" >/dev/null 2>"$work/k.err"
}
bk_build() {
    bctl build --frontend dockerfile.v0 --local "context=$ctx" --local "dockerfile=$ctx" \
        --output "type=oci,dest=$work/b.tar" >/dev/null 2>"$work/b.err"
}
: > "$work/cold-kiln"; : > "$work/cold-bk"
for i in $(seq "$cold_pairs"); do
    rm -rf "$work/kh"
    t0=$EPOCHREALTIME; kiln_build "$work/kh"; t1=$EPOCHREALTIME
    echo "cold kiln $(awk "BEGIN{print $t1 - $t0}")" | tee -a /dev/stderr | awk '{print $3}' >> "$work/cold-kiln"
    bctl prune --all >/dev/null
    t0=$EPOCHREALTIME; bk_build; t1=$EPOCHREALTIME
    echo "cold buildkit $(awk "BEGIN{print $t1 - $t0}")" | tee -a /dev/stderr | awk '{print $3}' >> "$work/cold-bk"
done
: > "$work/noop-kiln"; : > "$work/noop-bk"
for i in $(seq "$cached_pairs"); do
    settle; t0=$EPOCHREALTIME; kiln_build "$work/kh"; t1=$EPOCHREALTIME
    awk "BEGIN{print $t1 - $t0}" >> "$work/noop-kiln"
    settle; t0=$EPOCHREALTIME; bk_build; t1=$EPOCHREALTIME
    awk "BEGIN{print $t1 - $t0}" >> "$work/noop-bk"
done
echo "cold median: kiln $(median < "$work/cold-kiln") s, buildkit $(median < "$work/cold-bk") s ($cold_pairs pairs)"
echo "no-op median: kiln $(median < "$work/noop-kiln") s, buildkit $(median < "$work/noop-bk") s ($cached_pairs pairs)"
