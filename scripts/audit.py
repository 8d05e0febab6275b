"""pip-audit of the pinned dependency set (constraints.txt), with an honest report when it cannot run.

Exit 1: a pinned package has a known vulnerability with a fixed version (upgrade the pin).
Exit 0: no fixable vulnerability found -- or the vulnerability data could not be had at all, which is
        reported loudly as "AUDIT NOT PERFORMED" (set AUDIT_STRICT=1 to make that fail instead).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    strict = os.environ.get("AUDIT_STRICT") == "1"
    command = [
        str(Path(sys.executable).with_name("pip-audit")),
        "--requirement",
        str(ROOT / "constraints.txt"),
        "--no-deps",  # constraints.txt already lists every package, exactly pinned
        "--disable-pip",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        "20",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print("pip-audit: AUDIT NOT PERFORMED: the vulnerability service could not be used.", file=sys.stderr)
        print(result.stderr.strip()[-2000:], file=sys.stderr)
        return 1 if strict else 0
    code, lines = verdict(report, strict=strict)
    print("\n".join(lines))
    return code


def verdict(report: dict[str, Any], *, strict: bool = False) -> tuple[int, list[str]]:
    """Exit code and report lines for a `pip-audit --format json` report."""
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    skipped = [d for d in deps if "skip_reason" in d]
    fixable = [(d, v) for d in audited for v in d.get("vulns", []) if v.get("fix_versions")]
    unfixed = [(d, v) for d in audited for v in d.get("vulns", []) if not v.get("fix_versions")]
    lines = [f"pip-audit: {len(deps)} pinned packages, {len(audited)} audited, {len(skipped)} without data"]
    lines += [f"  known, no fix yet: {d['name']} {d['version']} {v['id']}" for d, v in unfixed]
    lines += [
        f"  VULNERABLE: {d['name']} {d['version']} {v['id']}: fixed in {', '.join(v['fix_versions'])}"
        for d, v in fixable
    ]
    if fixable:
        return 1, [*lines, "pip-audit: FAILED: upgrade the pins above in constraints.txt"]
    if not audited:
        reason = skipped[0]["skip_reason"] if skipped else "empty report"
        lines.append(
            f"pip-audit: AUDIT NOT PERFORMED: no package could be looked up (first reason: {reason}). "
            "The PyPI vulnerability API is unreachable or does not serve these versions from here; "
            "run scripts/audit.sh where https://pypi.org/pypi/<name>/<version>/json answers."
        )
        return (1 if strict else 0), lines
    lines += [f"  not audited: {d['name']} {d['version']}: {d['skip_reason']}" for d in skipped]
    lines.append("pip-audit: no known vulnerability with a fix in the audited packages")
    return 0, lines


if __name__ == "__main__":
    raise SystemExit(main())
