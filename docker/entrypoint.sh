#!/usr/bin/env bash
# Jetson runtime entrypoint: build (or reuse) the TensorRT engine in the mounted cache, then run.
#
#   docker run ... IMAGE infer /data/scan.pcd.bin ... [--out /out]
#   docker run ... IMAGE bench [--iters 100]      # report into /out/bench (the bundle is mounted read-only)
#   docker run ... IMAGE verify         # hashes + held-out metrics from the bundle alone (no engine)
#   docker run ... IMAGE build          # only build the engine
#   docker run ... IMAGE shell          # bash
#
# Environment: BUNDLE (default /bundle), EDGEDISTILL_ENGINE_CACHE (default /cache),
# PRECISION (fp32 | fp16 | int8, default int8), BACKEND (auto | tensorrt | onnxruntime, default auto).
set -euo pipefail

BUNDLE="${BUNDLE:-/bundle}"
PRECISION="${PRECISION:-int8}"
BACKEND="${BACKEND:-auto}"
export EDGEDISTILL_ENGINE_CACHE="${EDGEDISTILL_ENGINE_CACHE:-/cache}"

cmd="${1:-infer}"
if [ "$#" -gt 0 ]; then shift; fi

if [ "$cmd" = "shell" ]; then
  exec bash "$@"
fi
if [ ! -f "$BUNDLE/metadata.json" ]; then
  echo "entrypoint: no bundle at $BUNDLE (mount one: -v /path/to/bundle:$BUNDLE:ro)" >&2
  exit 2
fi

if [ "$cmd" = "verify" ]; then
  # INT8/FP16 kernels of this image's onnxruntime may differ from the exporting machine's.
  exec python3 -m deploy.cli verify "$BUNDLE" --metric-tolerance 0.5 "$@"
fi

if [ "$BACKEND" != "onnxruntime" ]; then
  if python3 -c "import tensorrt" 2>/dev/null; then
    # First start: builds the engine for this TensorRT + GPU + L4T into the cache; later: a cache hit.
    python3 -m deploy.tensorrt build "$BUNDLE" --precision "$PRECISION" --cache "$EDGEDISTILL_ENGINE_CACHE"
  elif [ "$BACKEND" = "tensorrt" ]; then
    echo "entrypoint: BACKEND=tensorrt but the tensorrt Python module is missing (python3-libnvinfer)" >&2
    exit 2
  else
    echo "entrypoint: tensorrt not importable; falling back to ONNX Runtime" >&2
  fi
fi

case "$cmd" in
  build) exit 0 ;;
  infer) exec python3 -m deploy.cli infer "$BUNDLE" --precision "$PRECISION" --backend "$BACKEND" "$@" ;;
  bench) exec python3 -m deploy.cli bench "$BUNDLE" --backend onnxruntime --backend tensorrt --out /out/bench "$@" ;;
  *) echo "entrypoint: unknown command '$cmd' (infer, bench, verify, build, shell)" >&2; exit 2 ;;
esac
