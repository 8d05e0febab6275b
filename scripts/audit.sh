#!/usr/bin/env bash
# Audit the pinned dependencies (constraints.txt) for known vulnerabilities with pip-audit.
# Fails on a vulnerability that has a fix; says "AUDIT NOT PERFORMED" (and passes, unless AUDIT_STRICT=1)
# when the vulnerability data cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python scripts/audit.py
