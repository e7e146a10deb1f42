#!/usr/bin/env bash
# Installs the Debian packages pkm-convert builds against. Idempotent: installs only what is missing.
set -euo pipefail
packages=(libhdf5-dev libzstd-dev libopenblas-dev libssl-dev pkg-config)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present (${packages[*]})"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install-deps: apt-get update failed; trying the install with the cached lists"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
