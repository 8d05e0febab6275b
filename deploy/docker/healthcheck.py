"""Container health check without curl: exit 0 when GET /readyz answers 200, else 1.

Docker's HEALTHCHECK and the compose healthcheck run it; it follows RESNET_API_PORT like the server does, and
with RESNET_API_PROTECT_PROBES on it sends the server's first API key, read from the same variables.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# Readiness, not liveness: the server listens while the model loads, and "healthy" is what `depends_on:
# condition: service_healthy` waits for before sending traffic.
PATH = "/readyz"


def url() -> str:
    return f"http://127.0.0.1:{os.environ.get('RESNET_API_PORT', '8000')}{PATH}"


def headers() -> dict[str, str]:
    """An `X-API-Key` when the probes need one; without the variable nothing more is imported (it runs every 10 s)."""
    if not os.environ.get("RESNET_API_PROTECT_PROBES", "").strip():
        return {}
    from resnet_api.settings import Settings  # the server's own reading: "off", "f", "n"... and the key file

    settings = Settings()
    keys = settings.all_api_keys() if settings.protect_probes else []
    return {"X-API-Key": keys[0]} if keys else {}


def main() -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url(), headers=headers()), timeout=4) as response:
            ok = response.status == 200
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {url()}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
