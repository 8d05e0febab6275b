# syntax=docker/dockerfile:1
# resnet-api: ImageNet ResNet-18 on CPUs, with the official weights baked in so the container runs offline.
#   docker build -t resnet-api .
#   docker run --rm -p 8000:8000 resnet-api         # API, Swagger UI at /docs, Web UI at /
# tests/deploy/ checks this file against the app's Settings and routes (and runs hadolint on it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a venv with CPU-only torch and the pinned dependencies, plus the weights ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY constraints.txt ./
# 1. torch from PyTorch's CPU wheel index: the default index serves a build that pulls GBs of CUDA libraries.
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
# 2. the project and torch's own dependencies from the default index, every version from constraints.txt.
COPY pyproject.toml README.md ./
COPY src ./src
# The `accel` extra brings ONNX Runtime and OpenVINO, so RESNET_API_BACKEND can pick any backend.
RUN pip install -c constraints.txt ".[accel]" \
    && pip check
# 3. the official ImageNet weights; torch.hub checks the SHA-256 prefix in the file name (f37072fd).
RUN resnet-api weights fetch --weights-dir /opt/resnet-api/weights --quiet

# ---- runtime: no compilers, no caches, no source tree; non-root; read-only root filesystem friendly ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 resnet \
    && useradd --system --uid 10001 --gid resnet --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin resnet \
    && mkdir -p /var/lib/resnet-api && chown 10001:10001 /var/lib/resnet-api
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/resnet-api/weights /opt/resnet-api/weights
COPY deploy/docker/entrypoint.sh deploy/docker/healthcheck.py /opt/resnet-api/
# Settings the image pins: listen on all interfaces, strict official weights from the baked dir, never
# download, never fall back to untrained weights. Thread counts are left to the app: they follow the
# container's CPU limit (cgroup quota), and the entrypoint sets OMP_NUM_THREADS the same way.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RESNET_API_HOST=0.0.0.0 \
    RESNET_API_PORT=8000 \
    RESNET_API_WEIGHTS=imagenet \
    RESNET_API_WEIGHTS_DIR=/opt/resnet-api/weights \
    RESNET_API_ALLOW_DOWNLOAD=false \
    RESNET_API_FALLBACK_TO_RANDOM=false \
    RESNET_API_DATA_DIR=/var/lib/resnet-api \
    RESNET_API_MODEL_CACHE_DIR=/var/lib/resnet-api/model-cache
USER 10001:10001
WORKDIR /tmp
# Writable paths: /tmp (uploads over 1 MiB are spooled there) and the data dir (custom classifiers, and the
# ONNX/int8 exports the non-torch backends make once from the baked weights).
VOLUME ["/tmp", "/var/lib/resnet-api"]
EXPOSE 8000
# /readyz through the stdlib (no curl in the image): healthy once the model is loaded; follows RESNET_API_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/resnet-api/healthcheck.py"]
ENTRYPOINT ["/opt/resnet-api/entrypoint.sh"]
CMD ["serve"]
