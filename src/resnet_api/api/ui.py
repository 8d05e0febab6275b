"""The Web UI's static files, served at `/` without shadowing the API's own 404 and 405 answers."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class UIFiles(StaticFiles):
    """Static files that browsers revalidate (ETag, a 304 when unchanged) before each use.

    The pages and the modules they import (`i18n.js` by both pages) must come from the same release: without
    `Cache-Control`, a browser may reuse a cached script for days after an upgrade, beside the new HTML.
    """

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


class StaticUI(Mount):
    """A mount at `/` that claims only the files the UI ships (and `/` for index.html).

    A plain `Mount("/")` matches every path, so `GET /v1/predict` would answer 404 instead of 405 and
    `POST /nope` 405 instead of 404; matching only known files keeps the API's answers unchanged.
    """

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        super().__init__("/", app=UIFiles(directory=directory, html=True), name="ui")
        # The package's files do not change while it runs: list them once, match with a set lookup.
        self.files = frozenset(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        relative = scope.get("path", "").lstrip("/")
        if scope["type"] != "http" or (relative and relative not in self.files):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is Match.FULL and scope["method"] not in ("GET", "HEAD"):
            # Like a route with the wrong method: used (405) only if no API route matches fully.
            return Match.PARTIAL, child_scope
        return match, child_scope
