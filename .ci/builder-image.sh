#!/usr/bin/env bash
# Prints the path of a Debian bookworm root filesystem made by
#   debootstrap --variant=minbase bookworm DIR http://deb.debian.org/debian
# building it first when the cache has none. This is the builder image of the
# examples' `image("docker.io/library/debian:bookworm")`: tests and the demo
# `kiln import` it, push it to a local registry and point the build at it with
# `--registry-mirror docker.io=127.0.0.1:PORT` (there is no Docker Hub here).
#
# The cache lives in $KILN_CI_CACHE (default /var/cache/kiln-ci), which
# outlives CI runs on this machine:
#   $KILN_CI_CACHE/bookworm-minbase/rootfs    the root filesystem
#   $KILN_CI_CACHE/bookworm-minbase/complete  written last: what made it
# A rootfs is built in a temp directory beside it and renamed into place, so a
# killed run never leaves a half-made one under the final name; one that fails
# the checks below is thrown away and rebuilt. A lock serializes concurrent
# callers (parallel tests). Needs root (debootstrap, and the rootfs holds
# files of several owners) and, on a cold cache, Debian's mirror.
#
# Usage: .ci/builder-image.sh            build if needed, print the rootfs path
#        .ci/builder-image.sh --rebuild  throw the cached one away first
set -euo pipefail

CACHE=${KILN_CI_CACHE:-/var/cache/kiln-ci}
MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DEST=$CACHE/$SUITE-minbase
# A rootfs made by hand with exactly the command above (the machine image
# may ship one): adopted instead of downloading again if it passes the checks.
PREWARM=$CACHE/prewarm-rootfs

log() { echo "builder-image: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "needs root (debootstrap); run it as root once, e.g. through .ci/setup"
  [ -f "$DEST/complete" ] && { echo "$DEST/rootfs"; exit 0; }
  exit 1
fi

# What a usable builder rootfs has: a shell, apt and dpkg's database, and it
# says it is Debian 12. `chroot true` proves the dynamic loader and libc work.
check() {
  local root=$1
  [ -x "$root/usr/bin/apt-get" ] && [ -x "$root/bin/sh" ] &&
    [ -s "$root/var/lib/dpkg/status" ] &&
    grep -q '^12' "$root/etc/debian_version" 2>/dev/null &&
    chroot "$root" /bin/sh -c 'dpkg-query -W apt >/dev/null' 2>/dev/null
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.$SUITE-minbase.lock"
flock 9

if [ "${1:-}" = "--rebuild" ]; then
  rm -rf "$DEST"
fi

if [ -f "$DEST/complete" ] && check "$DEST/rootfs"; then
  echo "$DEST/rootfs"
  exit 0
fi
if [ -e "$DEST" ]; then
  log "cached rootfs $DEST is incomplete or damaged: rebuilding"
  rm -rf "$DEST"
fi
# Leftovers of killed runs.
rm -rf "$CACHE"/.tmp-"$SUITE"-minbase.*

tmp=$(mktemp -d "$CACHE/.tmp-$SUITE-minbase.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -f "$PREWARM/etc/debian_version" ] && check "$PREWARM"; then
  log "adopting $PREWARM"
  mv "$PREWARM" "$tmp/rootfs"
  note="adopted from $PREWARM (made with debootstrap --variant=minbase $SUITE)"
else
  log "debootstrap --variant=minbase $SUITE (about a minute)"
  if ! debootstrap --variant=minbase "$SUITE" "$tmp/rootfs" "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
    log "debootstrap failed; last lines of its log:"
    tail -n 20 "$tmp/debootstrap.log" >&2
    exit 1
  fi
  note="debootstrap --variant=minbase $SUITE $MIRROR"
fi
# debootstrap leaves its apt lists and downloaded packages in the rootfs; a
# builder image runs `apt-get update` itself, so they only make it bigger.
rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*_Packages
if ! check "$tmp/rootfs"; then
  log "the new rootfs in $tmp/rootfs fails the checks (no apt, sh or dpkg database)"
  exit 1
fi
printf '%s\n%s\n' "$note" "$(date -u +%FT%TZ)" >"$tmp/complete"
sync -f "$tmp/rootfs" 2>/dev/null || true
mv -T "$tmp" "$DEST"
trap - EXIT
log "cached $DEST/rootfs"
echo "$DEST/rootfs"
