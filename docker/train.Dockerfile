# Training image (x86_64, CUDA 12.6, Python 3.12): the full pipeline (torch 2.11, spconv cu126, Ray).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.12 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10); libgl, libglib, libgomp and
# libusb for open3d (it does not import without libusb-1.0).
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common=0.99.22.* gpg-agent=2.2.27-* \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12=3.12.* python3.12-venv=3.12.* python3.12-dev=3.12.* \
        libgl1=1.4.0-* libglib2.0-0=2.72.* libgomp1=12.3.* libusb-1.0-0=2:1.0.* \
    && rm -rf /var/lib/apt/lists/*

RUN python3.12 -m venv "$VIRTUAL_ENV"

WORKDIR /opt/edgedistill
COPY pyproject.toml README.md /opt/edgedistill/
COPY pipelines/ /opt/edgedistill/pipelines/
COPY modalities/ /opt/edgedistill/modalities/
COPY deploy/ /opt/edgedistill/deploy/
COPY configs/ /opt/edgedistill/configs/

# torch 2.11 CUDA 12.6 wheels, then the project (on Python 3.12 it brings spconv-cu126).
# The local project is pinned by its own pyproject.toml, hence DL3013 does not apply.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu126 \
        torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 \
    && pip install --no-cache-dir .

RUN useradd --create-home --uid 1000 --user-group edge && mkdir -p /runs && chown edge:edge /runs
USER 1000:1000
VOLUME ["/runs"]

ENTRYPOINT ["edgedistill"]
CMD ["doctor"]
