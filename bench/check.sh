#!/usr/bin/env bash
# Whole-process benchmark of `kiln check` on generated Kilnfiles of 1k, 5k
# and 50k lines (100, 500 and 5000 stages). Needs hyperfine (.ci/setup).
# Usage: bench/check.sh [path/to/kiln]   (default: target/release/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${1:-target/release/kiln}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
args=()
for stages in 100 500 5000; do
  mkdir -p "$dir/$stages"
  python3 bench/gen-kilnfile.py "$stages" > "$dir/$stages/Kilnfile"
  echo "$stages stages: $(wc -l < "$dir/$stages/Kilnfile") lines" >&2
  "$KILN" check "$dir/$stages" >/dev/null
  args+=("$KILN check $dir/$stages")
done
hyperfine --warmup 3 --runs 30 -N --export-markdown "$dir/result.md" "${args[@]}" >&2
cat "$dir/result.md"
