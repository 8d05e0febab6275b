#!/usr/bin/env bash
# Install what is needed and start the service on http://127.0.0.1:8000 (Swagger UI at /docs).
# Uses the official ImageNet weights when they are on disk or can be downloaded; otherwise (no internet)
# it starts on UNTRAINED weights with loud warnings. `resnet-api serve` alone stays strict.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RESNET_API_FALLBACK_TO_RANDOM="${RESNET_API_FALLBACK_TO_RANDOM:-true}"
exec .venv/bin/resnet-api serve "$@"
