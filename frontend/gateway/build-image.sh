#!/usr/bin/env bash
# Builds the kiln BuildKit frontend image with kiln itself and pushes it as
# REGISTRY/kiln-frontend:latest and REGISTRY/kiln-frontend:VERSION.
#   frontend/gateway/build-image.sh REGISTRY [KILN]
# The binary is linked statically (crt-static: glibc, no interpreter), so it
# runs on kiln's static base. A loopback registry is spoken to over http.
set -euo pipefail
registry=${1:?usage: build-image.sh REGISTRY [KILN]}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
kiln=${2:-$target_dir/release/kiln}
triple=$(rustc -vV | sed -n 's/^host: //p')
# With --target, RUSTFLAGS reach only the target, not build scripts.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p kiln-frontend-gateway --target "$triple"
version=$(cargo pkgid -p kiln-frontend-gateway | sed 's/.*[#@]//')
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$target_dir/$triple/release/kiln-frontend" "$ctx/"
"$kiln" build -f frontend/gateway/Kilnfile "$ctx" \
    -o "type=registry,name=$registry/kiln-frontend:latest" \
    -o "type=registry,name=$registry/kiln-frontend:$version"
echo "pushed $registry/kiln-frontend:latest and :$version"
