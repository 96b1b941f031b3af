#!/usr/bin/env bash
# Whole-process benchmark of `kiln check` on generated Kilnfiles
# (bench/gen-kilnfile.py): stages of 10 lines at 1k, 5k, 50k and 500k lines,
# and the `--chain` shape (one `.env`/`.label` binding per line, each kept)
# at 50k and 500k lines. Prints hyperfine's table and the peak RSS of one
# run of each (/usr/bin/time). Needs hyperfine (.ci/setup).
# Usage: bench/check.sh [path/to/kiln]   (default: target/release/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${1:-target/release/kiln}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
small=() large=()
gen() { # NAME ARGS...
  local name=$1
  shift
  mkdir -p "$dir/$name"
  python3 bench/gen-kilnfile.py "$@" > "$dir/$name/Kilnfile"
  "$KILN" check "$dir/$name" >/dev/null
}
for stages in 100 500 5000 50000; do
  gen "stages-$stages" "$stages"
  if [ "$stages" -le 5000 ]; then small+=("$KILN check $dir/stages-$stages"); else large+=("$KILN check $dir/stages-$stages"); fi
done
for lines in 50000 500000; do
  gen "chain-$lines" --chain "$lines"
  if [ "$lines" -le 50000 ]; then small+=("$KILN check $dir/chain-$lines"); else large+=("$KILN check $dir/chain-$lines"); fi
done
echo "| Kilnfile | lines | bytes | peak RSS |" >&2
echo "|---|---:|---:|---:|" >&2
for d in "$dir"/stages-* "$dir"/chain-*; do
  rss=$(/usr/bin/time -f %M "$KILN" check "$d" 2>&1 >/dev/null | tail -1)
  echo "| $(basename "$d") | $(wc -l < "$d/Kilnfile") | $(wc -c < "$d/Kilnfile") | $((rss / 1024)) MiB |" >&2
done
hyperfine --warmup 3 --runs 30 -N --export-markdown "$dir/small.md" "${small[@]}" >&2
hyperfine --warmup 1 --runs 5 -N --export-markdown "$dir/large.md" "${large[@]}" >&2
cat "$dir/small.md"
echo
cat "$dir/large.md"
