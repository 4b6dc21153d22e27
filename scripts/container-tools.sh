#!/usr/bin/env bash
# The container tools the image tests use (tests/test_images.py): Debian's podman, runc,
# skopeo, docker-registry and docker.io (dockerd, for docker load). Installs what is missing when run as root (waiting for the dpkg
# lock, which other installs may hold); otherwise says in one line why the tests will skip.
set -euo pipefail
tools=(podman runc skopeo docker-registry dockerd)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "container tools: present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "container tools: missing ${missing[*]} and cannot install them (needs root and apt-get); the image tests will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
  podman runc skopeo docker-registry docker.io >/dev/null
# the packaged services (the registry listens on every interface): the tests start their own
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now docker-registry docker.service docker.socket >/dev/null 2>&1 || true
fi
echo "container tools: installed ${missing[*]}"
