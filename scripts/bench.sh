#!/usr/bin/env bash
# The benchmark (bench/run.py): installs the accel and bench extras, then runs on loopback. Usage: scripts/bench.sh [--quick] [...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh accel,bench
exec .venv/bin/python bench/run.py "$@"
