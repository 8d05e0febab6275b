#!/bin/sh
# Container entrypoint: `resnet-api "$@"` (default CMD: serve) with OpenMP threads sized like torch's.
# The app sizes torch and decode threads from the CPUs it may use (affinity and cgroup quota); OpenMP
# would otherwise size its pool from the host's cores and oversubscribe a CPU-limited container.
set -eu
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    OMP_NUM_THREADS="$(python -c 'from resnet_api.settings import available_cpus; print(available_cpus())')"
    export OMP_NUM_THREADS
fi
exec resnet-api "$@"
