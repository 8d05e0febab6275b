"""The committed openapi.json is what the app generates (clients are generated from it)."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_api.app import create_app
from resnet_api.settings import Settings

COMMITTED = Path(__file__).parents[1] / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    generated = create_app(Settings()).openapi()
    committed = json.loads(COMMITTED.read_text())
    assert committed == generated, "openapi.json is stale: regenerate it with `.venv/bin/resnet-api openapi`"


def test_every_operation_is_documented_for_client_generators() -> None:
    schema = create_app(Settings()).openapi()
    ids = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert op.get("summary"), f"{method} {path} has no summary"
            assert op.get("tags"), f"{method} {path} has no tag"
            if path.startswith("/v1/") and method == "post":
                for status in ("413", "415", "422", "503"):
                    if status in op["responses"]:
                        content = op["responses"][status]["content"]
                        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
            if path.startswith("/v1/"):  # behind the API keys (when set), and 503 while loading or draining
                assert {"401", "503"} <= set(op["responses"]), f"{method} {path} declares {sorted(op['responses'])}"
            if path.startswith("/v1/classifiers") and method == "post":  # a body that can stall; files written
                assert {"408", "500"} <= set(op["responses"]), f"{method} {path} declares {sorted(op['responses'])}"
    assert len(ids) == len(set(ids))
    assert {"predict", "predict_batch", "embed", "get_model", "get_labels", "livez", "readyz"} <= set(ids)
