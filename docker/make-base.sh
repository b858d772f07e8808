#!/bin/sh
# Build a Debian bookworm base image from scratch (no registry needed) and load it into the local
# container store as $BASE_TAG (default localhost/synthgate-base:bookworm).
#
#   debootstrap --variant=minbase bookworm -> build/base/rootfs  -> build/base/bookworm-minbase.tar
#   podman import (or docker import) the tarball                 -> localhost/synthgate-base:bookworm
#
# It is the stand-in for the registry's python:3.11-slim-bookworm on machines that cannot pull:
# docker/Dockerfile installs Debian's python3.11 into it (the same Python minor version, the same
# /opt/venv layout). Skips what exists: the image (unless FORCE=1), the tarball.
#   ENGINE=podman|docker  MIRROR=http://deb.debian.org/debian  OUT=build/base
set -eu

BASE_TAG=${BASE_TAG:-localhost/synthgate-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
OUT=${OUT:-build/base}
ENGINE=${ENGINE:-podman}
TAR="$OUT/bookworm-minbase.tar"

if [ "${FORCE:-0}" != 1 ] && $ENGINE image exists "$BASE_TAG" 2>/dev/null; then
    echo "make-base: $BASE_TAG exists (FORCE=1 rebuilds it)"
    exit 0
fi
if [ "$ENGINE" = docker ] && [ "${FORCE:-0}" != 1 ] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "make-base: $BASE_TAG exists (FORCE=1 rebuilds it)"
    exit 0
fi

if [ ! -s "$TAR" ] || [ "${FORCE:-0}" = 1 ]; then
    command -v debootstrap >/dev/null || { echo "make-base: debootstrap missing (docker/podman-setup.sh)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "make-base: debootstrap needs root" >&2; exit 1; }
    ROOTFS="$OUT/rootfs"
    rm -rf "$ROOTFS"
    mkdir -p "$ROOTFS"
    start=$(date +%s)
    # ca-certificates: pip in the image talks to https indexes.
    debootstrap --variant=minbase --include=ca-certificates bookworm "$ROOTFS" "$MIRROR"
    # The same trimming as Debian's docker images: no package caches, lists, docs or man pages.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
           "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
           "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/tmp/*
    # apt inside containers: no recommends, no docs, clean after each install (as the slim images).
    cat > "$ROOTFS/etc/apt/apt.conf.d/90synthgate-container" <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
CONF
    cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/90synthgate-nodoc" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
CONF
    # Reproducible-ish: fixed mtimes are not needed for the import; numeric owners are.
    tar --numeric-owner -C "$ROOTFS" -cf "$TAR.tmp" .
    mv "$TAR.tmp" "$TAR"
    rm -rf "$ROOTFS"
    echo "make-base: debootstrap + tar took $(( $(date +%s) - start )) s -> $TAR ($(du -h "$TAR" | cut -f1))"
fi

$ENGINE import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --message "debootstrap --variant=minbase bookworm $MIRROR" \
    "$TAR" "$BASE_TAG"
echo "make-base: imported $BASE_TAG"
