"""uvicorn's server with a graceful SIGTERM: readiness fails on the signal itself, not after in-flight work.

uvicorn runs the lifespan shutdown only after the in-flight requests finish, and closes its listener at the
next tick, so the app would keep reporting ready while it drains. Here the signal handler:
1. calls `on_drain` at once (readiness 503, new work 503 + Retry-After, admitted work keeps running);
2. keeps the listener open for `drain_seconds` so load balancers see the failing readiness;
3. then lets uvicorn stop: close the listener, wait up to `timeout_graceful_shutdown` for accepted requests,
   run the lifespan shutdown, and return normally (exit code 0; uvicorn would re-raise SIGTERM otherwise).

The model loads after the listener opens (`create_app(load_in_background=True)`); when `failed()` turns true
(the load failed) the server stops the same way, and `serve` reports that start-up failed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_drain: Callable[[], None],
        drain_seconds: float = 0.0,
        failed: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._drain_seconds = drain_seconds
        self._drain_started: float | None = None
        self.failed = failed

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = self._drain_started is None
        if first:
            self._drain_started = time.monotonic()
            self._on_drain()
        if sig == signal.SIGTERM:
            # Not passed to uvicorn's handler, which would re-raise the signal after a clean shutdown.
            if not first or self._drain_seconds <= 0:
                self.should_exit = True
            return
        if first and self._drain_seconds > 0:
            return  # a second Ctrl-C skips the drain
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:  # every 0.1 s
        started = self._drain_started
        if started is not None and not self.should_exit and time.monotonic() - started >= self._drain_seconds:
            self.should_exit = True
        if self.failed():
            self.should_exit = True
        return await super().on_tick(counter)


def serve(
    app: Any,
    *,
    on_drain: Callable[[], None],
    drain_seconds: float = 0.0,
    failed: Callable[[], bool] = lambda: False,
    **uvicorn_options: Any,
) -> bool:
    """Run `app` like `uvicorn.run(app, **uvicorn_options)`, with the draining SIGTERM, until it stops or `failed()`;
    False if start-up failed."""
    config = uvicorn.Config(app, **uvicorn_options)
    server = DrainingServer(config, on_drain=on_drain, drain_seconds=drain_seconds, failed=failed)
    server.run()
    return server.started and not failed()
