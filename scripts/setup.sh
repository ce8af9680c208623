#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian/Ubuntu machine: system libraries that
# open3d needs, then a .venv with the project and its test extras. Re-running is cheap:
# the venv is reused and pip only runs again when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(libusb-1.0-0 libgl1 libgomp1)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python 3.11 first: the CPU-tested spconv-cu120 wheel exists up to 3.11 (3.12 gets spconv-cu126).
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    command -v "$cand" >/dev/null 2>&1 && { PYTHON="$cand"; break; }
  done
fi
[ -d .venv ] || { echo "setup: creating .venv with $PYTHON"; "$PYTHON" -m venv .venv; }
EXTRAS="dev"  # on Python 3.12 the core dependencies bring spconv-cu126

stamp=".venv/.edgedistill-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing edgedistill[$EXTRAS] into .venv (first time: several minutes, ~7 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
