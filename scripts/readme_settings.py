"""Rewrite the README's settings table from the Settings class (run after adding a setting).

Usage: .venv/bin/python scripts/readme_settings.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from resnet_api.settings import Settings  # noqa: E402
from test_settings import documented_default  # noqa: E402

HEADER = "| Variable | Default | Meaning |\n|---|---|---|\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start = text.index(HEADER) + len(HEADER)
    end = text.index("\n\n", start)
    rows = [
        f"| `RESNET_API_{name.upper()}` | {documented_default(name)} | {field.description} |"
        for name, field in Settings.model_fields.items()
    ]
    readme.write_text(text[:start] + "\n".join(rows) + text[end:])


if __name__ == "__main__":
    main()
