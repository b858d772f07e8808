#!/bin/sh
# Build the synthgate images with podman or docker.
#
#   docker/build.sh cpu     ghcr.io/synthgate/synthgate:$VERSION-cpu  from docker/Dockerfile
#   docker/build.sh cuda    ghcr.io/synthgate/synthgate:$VERSION-cuda from docker/Dockerfile.cuda
#   docker/build.sh torch-cuda  localhost/synthgate-torch-cuda:$TORCH from docker/Dockerfile.torch-cuda:
#               a PyTorch CUDA base made from PyPI's CUDA wheels on the debootstrap base (`cuda`
#               builds it by itself when the registry's pytorch/pytorch base cannot be pulled)
#
# Environment:
#   ENGINE      docker | podman (default: docker when `docker info` works, else podman; podman is
#               installed by docker/podman-setup.sh when missing)
#   BASE_IMAGE  base of the CPU image. Default: python:3.11-slim-bookworm when it is present or can
#               be pulled, else the debootstrap base localhost/synthgate-base:bookworm, built by
#               docker/make-base.sh (no registry needed)
#   CUDA_BASE_IMAGE  base of the CUDA image. Default: the Dockerfile.cuda ARG (pytorch/pytorch)
#               when it is present or can be pulled, else localhost/synthgate-torch-cuda:$TORCH
#               (built here when missing)
#   TORCHVISION_VERSION  torchvision of the local torch-cuda base (default 0.28.0, built for torch 2.13)
#   IMAGE_REPO  default ghcr.io/synthgate/synthgate;  VERSION  default: pyproject.toml's version
#   PYTHON      python used to read pip's configuration (default .venv/bin/python, else python3)
#
# The build machine's pip configuration (find-links, extra/alternative indexes) is handed to the
# build as PIP_OPTS; local folders among them (a local torch CPU wheel, a file:// index) are
# mounted read-only with `podman build --volume`, so nothing of them lands in the image. When a
# find-links folder holds the pinned torch's CPU wheel, the build does not ask download.pytorch.org.
set -eu
cd "$(dirname "$0")/.."

FLAVOUR=${1:-cpu}
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/synthgate/synthgate}
PYTHON=${PYTHON:-}
[ -n "$PYTHON" ] || { [ -x .venv/bin/python ] && PYTHON=.venv/bin/python || PYTHON=python3; }
VERSION=${VERSION:-$($PYTHON -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        ENGINE=podman
    fi
fi
if [ "$ENGINE" = podman ] && ! command -v podman >/dev/null 2>&1; then
    docker/podman-setup.sh
fi

has_image() {
    if [ "$ENGINE" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# --- pip configuration of this machine -> PIP_OPTS (+ read-only volumes for local folders) --------
PIP_OPTS=""
FIND_LINKS_OPTS=""
VOLUMES=""
TORCH_INDEX_URL_ARG=""
add_volume() {  # $1: a local folder
    [ -d "$1" ] || return 0
    case " $VOLUMES " in *" $1:$1:ro "*) return 0 ;; esac
    VOLUMES="$VOLUMES $1:$1:ro"
}
pip_values() {  # all values of pip option $1 (find-links, index-url, extra-index-url), any scope
    { $PYTHON -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.$1='\(.*\)'$/\1/p"
      eval "printf '%s\n' \"\${PIP_$(echo "$1" | tr 'a-z-' 'A-Z_'):-}\""; } | tr ' ' '\n' | sed '/^$/d' | sort -u
}
torch_pin=$(sed -n 's/^torch==//p' requirements/constraints.txt)
for fl in $(pip_values find-links); do
    path=${fl#file://}
    if [ -d "$path" ]; then
        if [ "$ENGINE" = podman ]; then
            add_volume "$path"
            FIND_LINKS_OPTS="$FIND_LINKS_OPTS --find-links $path"
            ls "$path"/torch-"$torch_pin"+cpu-*.whl >/dev/null 2>&1 && TORCH_INDEX_URL_ARG="--build-arg TORCH_INDEX_URL="
        fi
    else
        FIND_LINKS_OPTS="$FIND_LINKS_OPTS --find-links $fl"
    fi
done
for opt in index-url extra-index-url; do
    for url in $(pip_values $opt); do
        case $url in
            file://*) [ "$ENGINE" = podman ] || continue; path=${url#file://}; add_volume "${path%/simple*}" ;;
        esac
        PIP_OPTS="$PIP_OPTS --$opt $url"
    done
done
# pip's CA bundle (PIP_CERT / cert=): on machines behind a TLS-inspecting proxy, pip in the build
# needs the same bundle. It is mounted over the image's own bundle for the build steps only.
cert=${PIP_CERT:-$($PYTHON -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$cert" ] && [ -f "$cert" ] && [ "$ENGINE" = podman ]; then
    VOLUMES="$VOLUMES $cert:/etc/ssl/certs/ca-certificates.crt:ro"
    PIP_OPTS="$PIP_OPTS --cert /etc/ssl/certs/ca-certificates.crt"
fi
VOLUME_ARGS=""
for v in $VOLUMES; do VOLUME_ARGS="$VOLUME_ARGS --volume $v"; done

INDEX_OPTS=$PIP_OPTS                  # indexes and certificate only
PIP_OPTS="$FIND_LINKS_OPTS$PIP_OPTS"   # everything

REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

case $FLAVOUR in
cpu)
    TAG="$IMAGE_REPO:$VERSION-cpu"
    if [ -z "${BASE_IMAGE:-}" ]; then
        BASE_IMAGE=python:3.11-slim-bookworm
        if ! has_image "$BASE_IMAGE" && ! $ENGINE pull -q "docker.io/library/$BASE_IMAGE" >/dev/null 2>&1; then
            echo "build: no registry reachable for $BASE_IMAGE; using the debootstrap base"
            BASE_IMAGE=localhost/synthgate-base:bookworm
            ENGINE=$ENGINE docker/make-base.sh
        fi
    fi
    DOCKERFILE=docker/Dockerfile
    BASE_ARG="--build-arg BASE_IMAGE=$BASE_IMAGE"
    ;;
cuda)
    TAG="$IMAGE_REPO:$VERSION-cuda"
    DOCKERFILE=docker/Dockerfile.cuda
    if [ -z "${CUDA_BASE_IMAGE:-}" ]; then
        CUDA_BASE_IMAGE=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile.cuda)
        if ! has_image "$CUDA_BASE_IMAGE" && ! $ENGINE pull -q "docker.io/$CUDA_BASE_IMAGE" >/dev/null 2>&1; then
            echo "build: no registry reachable for $CUDA_BASE_IMAGE; using a PyTorch CUDA base built from PyPI wheels"
            CUDA_BASE_IMAGE=localhost/synthgate-torch-cuda:$torch_pin
            has_image "$CUDA_BASE_IMAGE" || ENGINE=$ENGINE "$0" torch-cuda
        fi
    fi
    BASE_ARG="--build-arg BASE_IMAGE=$CUDA_BASE_IMAGE"
    TORCH_INDEX_URL_ARG=""
    ;;
torch-cuda)
    TAG="localhost/synthgate-torch-cuda:$torch_pin"
    DOCKERFILE=docker/Dockerfile.torch-cuda
    ENGINE=$ENGINE docker/make-base.sh
    BASE_ARG="--build-arg BASE_IMAGE=localhost/synthgate-base:bookworm --build-arg TORCH_VERSION=$torch_pin"
    BASE_ARG="$BASE_ARG --build-arg TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}"
    TORCH_INDEX_URL_ARG=""
    PIP_OPTS=$INDEX_OPTS   # no find-links: a local 2.13.0+cpu wheel would win over PyPI's CUDA 2.13.0
    ;;
*)
    echo "usage: $0 cpu|cuda|torch-cuda" >&2; exit 2 ;;
esac

echo "build: $ENGINE build -f $DOCKERFILE ${BASE_ARG:-} -t $TAG (pip:${PIP_OPTS:- default}; mounts:${VOLUMES:- none})"
start=$(date +%s)
# shellcheck disable=SC2086
$ENGINE build -f "$DOCKERFILE" \
    ${BASE_ARG:-} $TORCH_INDEX_URL_ARG $VOLUME_ARGS \
    --build-arg "PIP_OPTS=$PIP_OPTS" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED" \
    -t "$TAG" .
# Each build's creation label makes a new image: drop the untagged predecessors (ours only).
$ENGINE image prune -f --filter label=org.opencontainers.image.title=synthgate >/dev/null 2>&1 || true
size=$($ENGINE image inspect --format '{{.Size}}' "$TAG")
echo "build: $TAG built in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
