#!/usr/bin/env bash
# Builds the rcni container image from this checkout, offline: the static binaries
# (scripts/build.sh), then the image (Containerfile: FROM scratch, nothing is pulled), tagged
# localhost/rcni:<version> (the workspace version in Cargo.toml) and localhost/rcni:latest.
# Prints the tag and the image size.
#
#   scripts/image.sh [--archive FILE]
#
#   --archive FILE  also write the image to FILE as an OCI archive, to copy to a node and load
#                   there: `podman load -i FILE` or `ctr -n k8s.io images import FILE`; either
#                   names it localhost/rcni:<version>, the image the DaemonSet runs.
#
# Needs podman (Debian: apt-get install podman). It uses podman's default storage; the usual
# CONTAINERS_CONF / CONTAINERS_STORAGE_CONF select another (the tests use a private one).
set -euo pipefail
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
archive=
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) [ $# -ge 2 ] || { echo "image.sh: --archive needs a file" >&2; exit 2; }
               archive=$2; shift 2 ;;
    --archive=*) archive=${1#--archive=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$archive" ]; then
  archive=$(realpath -m -- "$archive")   # before the cd below
fi
cd "$(dirname "$0")/.."
command -v podman >/dev/null || { echo "image.sh: podman is missing: apt-get install podman" >&2; exit 1; }

./scripts/build.sh
version=$(cargo metadata --no-deps --format-version 1 --locked \
  | jq -r '.packages[] | select(.name == "install-cni") | .version')
repo=localhost/rcni
tag="$repo:$version"
source=$(git remote get-url origin 2>/dev/null || echo "file://$PWD")
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
  revision="$revision-dirty"
fi

# The build context: bin/ gets exactly what install-cni installs from target/bin, laid out as
# it installs them (rcni and a link per name), then install-cni itself
# (-P: a symlink stays a symlink, as do the installed links; the COPY keeps them too).
ctx=$(mktemp -d "${TMPDIR:-/tmp}/rcni-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
if ! log=$(target/bin/install-cni --src-dir target/bin --bin-dir "$ctx/bin" --no-conf 2>&1); then
  echo "$log" >&2
  echo "image.sh: staging the binaries with install-cni failed" >&2
  exit 1
fi
cp -pP target/bin/install-cni "$ctx/bin/install-cni"

# --timestamp: file times and the creation date are the commit's, so the same checkout
# builds the same image (same ID) again.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
podman build --quiet --pull=never --layers=false --file Containerfile --timestamp "$epoch" \
  --build-arg "VERSION=$version" --build-arg "SOURCE=$source" --build-arg "REVISION=$revision" \
  --tag "$tag" --tag "$repo:latest" "$ctx" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image: $tag (also $repo:latest)"
echo "size: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }'))"
if [ -n "$archive" ]; then
  rm -f -- "$archive"
  podman save --quiet --format oci-archive --output "$archive" "$tag"
  echo "archive: $archive ($(stat -c %s -- "$archive") bytes, OCI archive of $tag)"
fi
