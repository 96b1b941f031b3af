#!/usr/bin/env bash
# Layer export benchmark (issue 4): turning a ~1 GiB tree of mixed files into
# a compressed, digested layer in the store (`kiln import DIR`) against the
# shell pipeline `tar -cf - DIR | gzip | sha256sum` on the same tree.
# Usage: cargo build --release -p kiln-cli && bash crates/kiln-oci/benches/layer_export.sh
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
hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-5}" --export-json "$WORK/h.json" \
  --prepare "rm -rf $WORK/home" \
  -n "tar | gzip | sha256sum" "tar -cf - -C $TREE . | gzip | sha256sum" \
  -n "kiln import (gzip)" "$KILN import $TREE --compression gzip" \
  -n "kiln import (zstd)" "$KILN import $TREE --compression zstd" \
  -n "kiln import (none)" "$KILN import $TREE --compression none"

python3 - "$WORK/h.json" "$bytes" <<'PY'
import json, sys
data = json.load(open(sys.argv[1])); size = int(sys.argv[2])
for r in data["results"]:
    med = r["median"]
    print(f'{r["command"]:28} median {med:6.2f} s  {size / med / 1e6:7.1f} MB/s')
PY

# Peak RSS of the gzip export (GNU time's %M is in KiB).
rm -rf "$WORK/home"
/usr/bin/time -f "kiln import (gzip) peak RSS: %M KiB" "$KILN" import "$TREE" --compression gzip >/dev/null
