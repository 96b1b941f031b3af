#!/usr/bin/env bash
# Seed the parse_lower corpus with every example Kilnfile and the frontend's
# parse and diagnostics test corpora.
set -euo pipefail
cd "$(dirname "$0")"
corpus=corpus/parse_lower
mkdir -p "$corpus"
for f in ../examples/*/Kilnfile; do
    cp "$f" "$corpus/example-$(basename "$(dirname "$f")")"
done
for f in ../frontend/tests/parse/*.kiln ../frontend/tests/diagnostics/*.kiln; do
    cp "$f" "$corpus/$(basename "$(dirname "$f")")-$(basename "$f" .kiln)"
done
echo "seeded $(ls "$corpus" | wc -l) inputs into fuzz/$corpus" >&2
# The Dockerfile target: the lowering and diagnostics corpora, the
# conformance suite's Dockerfiles.
corpus=corpus/dockerfile
mkdir -p "$corpus"
for f in ../crates/kiln-dockerfile/tests/corpus/*.Dockerfile ../crates/kiln-dockerfile/tests/errors/*.Dockerfile; do
    cp "$f" "$corpus/$(basename "$(dirname "$f")")-$(basename "$f" .Dockerfile)"
done
for f in ../crates/kiln-cli/tests/dockerfiles/*/Dockerfile; do
    cp "$f" "$corpus/conformance-$(basename "$(dirname "$f")")"
done
echo "seeded $(ls "$corpus" | wc -l) inputs into fuzz/$corpus" >&2
