#!/bin/sh
# Install podman (+ buildah, runc, debootstrap, fuse-overlayfs) from Debian and configure it for
# these build machines. Idempotent: a second run installs nothing and rewrites identical files.
#
# Why the configuration: the default OCI runtime (crun) fails on the build machines, so podman
# uses runc with the cgroupfs manager, a file events logger (no journald/systemd) and explicit
# ulimits; storage is overlay. The settings go into a drop-in and storage file under /etc so that
# every podman invocation (the CLI, `podman system service` for the Docker API) picks them up
# without CONTAINERS_CONF in the environment.
#
#   docker/podman-setup.sh            install + configure (needs root and Debian's apt)
#   CONF_DIR=/some/dir docker/podman-setup.sh   write the files there instead of /etc/containers
set -eu

CONF_DIR=${CONF_DIR:-/etc/containers}
PKGS="podman buildah runc debootstrap fuse-overlayfs uidmap slirp4netns"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "podman-setup: need root to apt-get install:$missing" >&2
        exit 1
    fi
    echo "podman-setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$CONF_DIR/containers.conf.d"
cat > "$CONF_DIR/containers.conf.d/50-synthgate.conf" <<'CONF'
# written by synthgate docker/podman-setup.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF

# storage.conf has no drop-in directory in podman 4.3: write it only when none exists, or when it
# is ours from an earlier run.
if [ ! -f "$CONF_DIR/storage.conf" ] || grep -q "written by synthgate" "$CONF_DIR/storage.conf"; then
    cat > "$CONF_DIR/storage.conf" <<'CONF'
# written by synthgate docker/podman-setup.sh
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
fi

# Short names (python:3.11-slim-bookworm, pytorch/pytorch:...) mean Docker Hub, as with docker;
# never prompt for a registry.
mkdir -p "$CONF_DIR/registries.conf.d"
cat > "$CONF_DIR/registries.conf.d/50-synthgate.conf" <<'CONF'
# written by synthgate docker/podman-setup.sh
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF

podman --version
