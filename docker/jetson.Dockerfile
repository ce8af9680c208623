# Runtime image for NVIDIA Jetson Orin (JetPack 6.1: L4T 36.4, CUDA 12.6, TensorRT 10.3, Python 3.10).
# No torch: pre-processing is numpy, inference is TensorRT (built on first start into /cache)
# or ONNX Runtime. Build on an arm64 host or with buildx/QEMU, see docker/README.md.
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/opt/edgedistill \
    BUNDLE=/bundle \
    EDGEDISTILL_ENGINE_CACHE=/cache

# python3-pip is the only addition to the JetPack base; pinned to Ubuntu 22.04's version.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip=22.0.2+dfsg-1ubuntu0.* \
    && rm -rf /var/lib/apt/lists/*

COPY docker/requirements-jetson.txt /tmp/requirements-jetson.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements-jetson.txt && rm /tmp/requirements-jetson.txt

# Only the two packages the runtime imports (deploy + modalities; not pipelines, not torch).
WORKDIR /opt/edgedistill
COPY modalities/ /opt/edgedistill/modalities/
COPY deploy/ /opt/edgedistill/deploy/
COPY docker/entrypoint.sh /usr/local/bin/edgedistill-entrypoint

# Non-root user; /cache (engine + timing cache) and /out are the writable mounts.
RUN useradd --create-home --uid 1000 --user-group edge \
    && mkdir -p /cache /out /bundle \
    && chown edge:edge /cache /out \
    && chmod 0755 /usr/local/bin/edgedistill-entrypoint
USER 1000:1000
VOLUME ["/cache"]

ENTRYPOINT ["/usr/local/bin/edgedistill-entrypoint"]
CMD ["bench"]
