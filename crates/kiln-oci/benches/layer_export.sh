#!/usr/bin/env bash
# Layer export benchmark (issue 4): turning a ~1 GiB tree of mixed files into
# a compressed, digested layer in the store (`kiln import DIR`) against the
# shell pipeline `tar -cf - DIR | gzip | sha256sum` on the same tree.
# Usage: cargo build --release -p kiln-cli && bash crates/kiln-oci/benches/layer_export.sh
#   RUNS=3 WARMUP=1 (defaults 5, 1); KILN_BASE=/path/to/old/kiln for a
#   side-by-side baseline; TREE=DIR (default /tmp/kiln-bench-tree, made on
#   first use).
# Needs hyperfine (installed by .ci/setup). Prints medians; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../../.."
KILN=${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}
TREE=${TREE:-/tmp/kiln-bench-tree}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ ! -d "$TREE" ]; then
  # Real mixed content: text and docs, ELF binaries, python sources.
  mkdir -p "$TREE"
  cp -a /usr/share /usr/bin /usr/lib/python3 /usr/lib/python3.11 "$TREE"/
fi
bytes=$(du -sb "$TREE" | cut -f1)
echo "tree: $TREE, $((bytes / 1048576)) MiB apparent size"
# Warm the page cache so every command reads from memory.
tar -cf - "$TREE" 2>/dev/null | cat >/dev/null

export KILN_HOME="$WORK/home"
# Optional side-by-side baseline: KILN_BASE=/path/to/older/kiln adds its
# zstd and none lines, run in the same hyperfine session.
base_args=()
if [ -n "${KILN_BASE:-}" ]; then
  base_args=(-n "baseline import (zstd)" "$KILN_BASE import $TREE --compression zstd"
             -n "baseline import (none)" "$KILN_BASE import $TREE --compression none")
fi
# Reference lines that bound what any exporter can do on this machine: zstd
# level 1 alone on the same tar bytes with every core (1 MiB jobs, as kiln's
# chunks), and one sha256 pass (OpenSSL, SHA-NI when the CPU has it). The
# tar is made once, outside the timed runs.
tar -cf "$WORK/tree.tar" -C "$TREE" .
hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-5}" --export-json "$WORK/h.json" \
  --prepare "rm -rf $WORK/home" \
  -n "tar | gzip | sha256sum" "tar -cf - -C $TREE . | gzip | sha256sum" \
  -n "kiln import (gzip)" "$KILN import $TREE --compression gzip" \
  -n "kiln import (zstd)" "$KILN import $TREE --compression zstd" \
  -n "kiln import (none)" "$KILN import $TREE --compression none" \
  "${base_args[@]}" \
  -n "ref: zstd -1 -T$(nproc) on the tar" "zstd -q -1 -T$(nproc) -B1048576 -c $WORK/tree.tar" \
  -n "ref: openssl sha256 of the tar" "openssl dgst -sha256 $WORK/tree.tar" >/dev/null

python3 - "$WORK/h.json" "$bytes" <<'PY'
import json, statistics, sys
data = json.load(open(sys.argv[1])); size = int(sys.argv[2])
for r in data["results"]:
    med = statistics.median(r["times"])
    cpu = r["user"] + r["system"]
    print(f'{r["command"]:34} median {med:6.2f} s  {size / med / 1e6:7.1f} MB/s'
          f'  cpu {cpu:6.2f} s (user {r["user"]:.2f} + sys {r["system"]:.2f}, means)')
PY

# Peak RSS of the gzip export (GNU time's %M is in KiB).
rm -rf "$WORK/home"
/usr/bin/time -f "kiln import (gzip) peak RSS: %M KiB" "$KILN" import "$TREE" --compression gzip >/dev/null
