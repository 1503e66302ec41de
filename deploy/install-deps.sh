#!/usr/bin/env bash
# Installs what lineguard's build, tests and demo need on Debian (12 or later):
# apt packages that are missing, and the Python packages of the data set
# generator. Safe to run again: it installs only what is not there.
set -euo pipefail

APT_PACKAGES=(
  ca-certificates pkg-config
  python3 python3-pip          # weight download (pip) and the data set generator
  fonts-dejavu-core            # labels in eval plots
  mosquitto mosquitto-clients  # the real third-party broker in tests
  mesa-vulkan-drivers libvulkan1  # lavapipe: a real Vulkan device without a GPU
  clang libclang-dev           # bindgen for -sys crates
)
PY_MODULES=(numpy scipy PIL)
PY_PACKAGES=(numpy scipy pillow)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c "import $(IFS=,; echo "${PY_MODULES[*]}")" 2>/dev/null; then
  echo "install-deps: pip install ${PY_PACKAGES[*]}" >&2
  # Debian's system Python refuses user installs without this flag.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --user "${PY_PACKAGES[@]}" 2>/dev/null ||
    python3 -m pip install --quiet "${PY_PACKAGES[@]}"
fi
echo "install-deps: ok" >&2
