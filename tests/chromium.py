"""Headless Chromium from Debian (`apt-get install -y chromium`), started the same way by every browser test and the UI bench.

Playwright cannot download its own browsers on these machines, so it drives this executable.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")
MISSING = f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (scripts/test.sh does it when run as root)"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FAKE_CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
"""A generated video stream for getUserMedia, allowed without a prompt."""


def launch(playwright: Playwright, *extra_args: str) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, *extra_args])
