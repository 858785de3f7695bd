#!/usr/bin/env bash
# Prepare podman on this machine for the container tests (tests/lab/test_containers.py), as root.
# Idempotent and cached: a second run on the same machine takes a few seconds.
#
# The machine has no Docker engine and reaches no container registry, only the package
# registries (shared notes, machine.md). So:
#   1. apt-get installs podman and what it needs here (runc, not crun: crun fails on this
#      kernel's cgroup layout), and pip installs podman-compose;
#   2. /etc/containers/containers.conf selects runc and ulimits under the sandbox's limits;
#   3. a stand-in for the official python:3-slim base image is made once with debootstrap
#      (the rootfs tarball is cached under $PROTOLAB_CACHE) and imported as
#      localhost/protolab-base, with localhost/protolab-python on top trusting the host's
#      certificate bundle (pip inside a build reaches the index only through it).
# The project's Dockerfile keeps python:3.12-slim as its default base; the tests build it
# with --build-arg PYTHON_IMAGE=localhost/protolab-python.
# Prints the stand-in base image's name on its last line.
set -euo pipefail

CACHE=${PROTOLAB_CACHE:-/var/cache/protolab}
SUITE=bookworm
BASE=localhost/protolab-base
PYTHON=localhost/protolab-python
ROOTFS_TAR=$CACHE/$SUITE-python-rootfs.tar
export BUILDAH_ISOLATION=chroot

log() { echo "containers/setup: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/setup.lock"
flock 9  # two test runs at once share one setup

packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
        "${missing[@]}" >/dev/null
fi

if ! command -v podman-compose >/dev/null; then
    log "pip install podman-compose"
    python3 -m pip install -q --disable-pip-version-check podman-compose
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^runtime *= *"runc"' "$conf"; then
    if [ -s "$conf" ]; then
        log "$conf exists without runtime = \"runc\": leaving it alone; podman may fail"
    else
        log "writing $conf"
        mkdir -p /etc/containers
        cat >"$conf" <<'CONF'
# Written by protolab tests/containers/setup.sh: crun fails on this kernel's cgroup layout,
# and the sandbox may not raise rlimits, so the containers' ulimits stay under the current ones.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
[engine]
runtime = "runc"
CONF
    fi
fi

if ! podman image exists "$BASE"; then
    if [ ! -s "$ROOTFS_TAR" ]; then
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        log "debootstrap $SUITE into $rootfs (about a minute)"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            "$SUITE" "$rootfs" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        # What python:slim does not carry either: apt lists, docs, caches.
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
        tar -C "$rootfs" -cf "$ROOTFS_TAR.part" .
        mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    log "importing $BASE"
    podman import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE" >/dev/null
fi

if ! podman image exists "$PYTHON"; then
    log "building $PYTHON"
    printf 'FROM %s\nENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n' "$BASE" \
        | podman build -q -t "$PYTHON" -f - "$CACHE" >/dev/null
fi
echo "$PYTHON"
