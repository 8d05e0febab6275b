"""`resnet-api serve | predict | weights fetch | openapi`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from resnet_api import __version__
from resnet_api.inference.errors import WeightsUnavailable
from resnet_api.settings import Settings, SettingsError

log = logging.getLogger("resnet_api")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**{**overrides, **extra})


def _setup_logging(level: str) -> None:
    from resnet_api.logs import setup_logging

    setup_logging(level)


def top_k(text: str) -> int:
    """`--top-k`, bounded as the API's `top_k` is (a negative k would print 998 classes)."""
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 1000")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from resnet_api import server
    from resnet_api.app import begin_draining, create_app

    settings = _settings(args)
    _setup_logging(settings.log_level)
    app = create_app(settings, load_in_background=True)  # listens, and answers /livez, while the model loads
    # One worker per process on purpose: each worker would load its own model and half-fill its own batcher.
    started = server.serve(
        app,
        on_drain=lambda: begin_draining(app),
        drain_seconds=settings.shutdown_drain_seconds,
        failed=lambda: bool(app.state.load_failed),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=1,
        http="httptools",  # C parser (a dependency): uvicorn's pure-Python h11 costs 0.5-1.1 ms more per upload
        access_log=False,  # the app writes its own JSON access log line, with the request id
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0 if started else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from resnet_api.inference.errors import InferenceError
    from resnet_api.inference.service import UNTRAINED_WARNING, InferenceService

    settings = _settings(args, warmup=False)
    _setup_logging("warning")

    async def run() -> int:
        service = InferenceService(settings)
        await service.start()
        failures, rows = 0, []
        try:
            for path in args.images:
                try:
                    result = await service.classify(Path(path).read_bytes(), top_k=args.top_k)
                except (OSError, InferenceError) as exc:
                    failures += 1
                    rows.append({"file": path, "error": str(exc)})
                    continue
                rows.append(
                    {
                        "file": path,
                        "predictions": [
                            {"index": p.index, "label": p.label, "score": p.score} for p in result.predictions
                        ],
                        "total_ms": result.timings.total_ms,
                    }
                )
        finally:
            await service.stop()
        if service.description.untrained:
            print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_table(rows)
        return 1 if failures else 0

    return asyncio.run(run())


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'file':<32} {'rank':>4}  {'score':>7}  {'index':>5}  label")
    for row in rows:
        if "error" in row:
            print(f"{row['file']:<32} {'-':>4}  {'-':>7}  {'-':>5}  ERROR: {row['error']}")
            continue
        for rank, p in enumerate(row["predictions"], 1):
            name = row["file"] if rank == 1 else ""
            print(f"{name:<32} {rank:>4}  {p['score']:>7.2%}  {p['index']:>5}  {p['label']}")


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from resnet_api.inference.errors import WeightsUnavailable
    from resnet_api.inference.model import fetch_imagenet_weights, sha256_file

    _setup_logging("info")
    try:
        settings = Settings()
        path = fetch_imagenet_weights(
            args.weights_dir or settings.weights_dir, url=settings.weights_url, progress=not args.quiet
        )
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} sha256={sha256_file(path)}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from resnet_api.app import create_app

    schema = create_app(Settings()).openapi()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-api", description="ImageNet classification with ResNet-18 on CPUs")
    parser.add_argument("--version", action="version", version=f"resnet-api {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (settings also come from RESNET_API_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--weights", help="imagenet | random | PATH")
    serve.add_argument("--log-level", dest="log_level")
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser("predict", help="classify local image files without a server")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=top_k, default=3, help="classes to show, 1 to 1000 (default 3)")
    predict.add_argument("--weights", help="imagenet | random | PATH")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.set_defaults(func=cmd_predict)

    weights = sub.add_parser("weights", help="manage model weights")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = weights_sub.add_parser("fetch", help="download the official ImageNet weights (SHA-256 checked)")
    fetch.add_argument("--weights-dir", type=Path, default=None, help="default: torch.hub checkpoints dir")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_weights_fetch)

    openapi = sub.add_parser("openapi", help="write the OpenAPI schema")
    openapi.add_argument("--output", "-o", default="openapi.json", help="file to write, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ValidationError, SettingsError, WeightsUnavailable, OSError) as exc:
        # A setting, a weights file or a path to fix: what is wrong, not a traceback.
        print(f"resnet-api {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code
