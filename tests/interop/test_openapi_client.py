"""openapi.json is made for client generators: a client generated from it works against the real server."""

from __future__ import annotations

import base64
import importlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from imagegen import photo_like

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "openapi.json").read_text())
PACKAGE = "resnet_api_client"


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in SCHEMA["paths"].items() for method, op in item.items()]


def test_every_operation_is_named_tagged_summarised_and_types_its_errors() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))
    assert {"predict", "predict_batch", "embed", "get_model", "get_labels"} <= set(ids)
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        assert op["operationId"].isidentifier(), where
        assert op.get("tags"), where
        assert op.get("summary"), where
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                content = response["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, where
                assert content["example"]["status"] == int(status), where


def test_json_responses_and_bodies_carry_examples() -> None:
    schemas = SCHEMA["components"]["schemas"]
    for path, method, op in operations():
        success = next(s for s in op["responses"] if s.startswith("2"))  # 200, or 201/204 for creates and deletes
        ok = op["responses"][success].get("content", {}).get("application/json")
        if ok is not None and "$ref" in ok["schema"]:
            assert schemas[ok["schema"]["$ref"].rsplit("/", 1)[1]].get("examples"), f"{method} {path}"
        body = op.get("requestBody")
        if body is not None:
            one_image = path in ("/v1/predict", "/v1/embed")  # these also take the image file as the body
            raw = {"application/octet-stream"} if one_image else set()
            assert set(body["content"]) == {"multipart/form-data", "application/json"} | raw, path
            if one_image:
                raw_schema = body["content"]["application/octet-stream"]["schema"]
                assert (raw_schema["type"], raw_schema["format"]) == ("string", "binary"), path
            assert body["content"]["application/json"]["example"], path
            multipart = schemas[body["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
            file_fields = {"file", "files"} & set(multipart["properties"])
            file_schemas = [multipart["properties"][f].get("items", multipart["properties"][f]) for f in file_fields]
            # `format: binary` is what makes generators type the part as a file (not a str).
            assert file_schemas, path
            assert all((s["type"], s.get("format")) == ("string", "binary") for s in file_schemas), path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the client that `openapi-python-client` generates from the committed openapi.json."""
    out = tmp_path_factory.mktemp("generated")
    config = out / "config.yaml"
    config.write_text("post_hooks: []\n")
    exe = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert exe is not None, "install the test extra: openapi-python-client is missing"
    done = subprocess.run(
        [
            exe,
            "generate",
            "--path",
            str(ROOT / "openapi.json"),
            "--output-path",
            str(out / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower()
    return out


@pytest.fixture(scope="module")
def api(generated: Path) -> Iterator[ModuleType]:
    """The generated client, imported."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(generated))
        yield importlib.import_module(PACKAGE)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _mod(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_calls_every_v1_endpoint_with_types(api: ModuleType, interop_server: str) -> None:
    models, types = _mod("models"), _mod("types")
    predict, predict_batch, embed = (_mod(f"api.inference.{n}") for n in ("predict", "predict_batch", "embed"))
    get_model, get_labels = _mod("api.model.get_model"), _mod("api.model.get_labels")
    image = photo_like(seed=3)

    with api.Client(base_url=interop_server, timeout=60.0) as client:
        upload = models.ImageUpload(
            file=types.File(payload=io.BytesIO(image), file_name="a.jpg", mime_type="image/jpeg")
        )
        by_file = predict.sync(client=client, body=upload, top_k=5)
        assert isinstance(by_file, models.PredictResponse)
        assert len(by_file.predictions) == 5
        assert isinstance(by_file.predictions[0], models.PredictionItem)
        assert by_file.image.format_ == "JPEG"

        by_json = predict.sync(client=client, body=models.ImageJSON(image=base64.b64encode(image).decode()), top_k=5)
        assert isinstance(by_json, models.PredictResponse)
        assert [p.index for p in by_json.predictions] == [p.index for p in by_file.predictions]

        by_body = predict.sync(client=client, body=types.File(payload=io.BytesIO(image)), top_k=5)
        assert isinstance(by_body, models.PredictResponse)
        assert [p.index for p in by_body.predictions] == [p.index for p in by_file.predictions]

        files = [types.File(payload=io.BytesIO(photo_like(seed=s)), file_name=f"{s}.jpg") for s in (4, 5)]
        batch = predict_batch.sync(client=client, body=models.BatchUpload(files=files), top_k=2)
        assert isinstance(batch, models.BatchResponse)
        assert [(r.index, r.filename, r.ok) for r in batch.results] == [(0, "4.jpg", True), (1, "5.jpg", True)]

        vector = embed.sync(client=client, body=upload, normalize=True)
        assert isinstance(vector, models.EmbedResponse)
        assert vector.dim == 512
        assert len(vector.embedding) == 512
        raw_vector = embed.sync(client=client, body=types.File(payload=io.BytesIO(image)), normalize=True)
        assert isinstance(raw_vector, models.EmbedResponse)
        assert raw_vector.embedding == pytest.approx(vector.embedding, abs=1e-6)

        info = get_model.sync(client=client)
        assert isinstance(info, models.ModelInfo)
        assert (info.name, info.num_classes, info.untrained) == ("resnet18", 1000, False)

        labels = get_labels.sync(client=client)
        assert isinstance(labels, models.LabelsResponse)
        assert labels.count == 1000
        assert labels.labels[by_file.predictions[0].index] == by_file.predictions[0].label


def test_generated_client_gets_typed_errors(api: ModuleType, interop_server: str) -> None:
    models, types = _mod("models"), _mod("types")
    predict = _mod("api.inference.predict")

    def upload(data: bytes, name: str) -> Any:
        return models.ImageUpload(file=types.File(payload=io.BytesIO(data), file_name=name))

    with api.Client(base_url=interop_server, timeout=60.0) as client:
        too_big = predict.sync_detailed(client=client, body=upload(b"\xff" * (300 * 1024), "big.jpg"))
        not_image = predict.sync_detailed(client=client, body=upload(b"plain text, not an image", "notes.txt"))
        bad_param = predict.sync_detailed(client=client, body=upload(photo_like(), "a.jpg"), top_k=0)
        bad_json = predict.sync_detailed(client=client, body=models.ImageJSON(image="%%% not base64 %%%"))

    for response, status, code in (
        (too_big, 413, "payload_too_large"),
        (not_image, 415, "unsupported_media_type"),
        (bad_param, 422, "validation_error"),
        (bad_json, 422, "validation_error"),
    ):
        assert response.status_code == status
        assert isinstance(response.parsed, models.Problem), response.content
        assert (response.parsed.status, response.parsed.code) == (status, code)
    assert "top_k" in bad_param.parsed.detail
    assert "base64" in bad_json.parsed.detail


USAGE = """
import io
from resnet_api_client import Client
from resnet_api_client.api.inference import predict_batch
from resnet_api_client.models import BatchJSON, BatchResponse, ImageJSON, Problem

def first_label(client: Client) -> str | None:
    result = predict_batch.sync(client=client, body=BatchJSON(images=[ImageJSON(image="aGk=", filename="a")]))
    if isinstance(result, Problem):
        return result.code
    assert isinstance(result, BatchResponse)
    item = result.results[0]
    return item.predictions[0].label if item.predictions else None
"""


def test_generated_client_and_typed_usage_pass_mypy_strict(generated: Path) -> None:
    (generated / "usage.py").write_text(USAGE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(generated / ".mypy_cache"), "usage.py", PACKAGE],
        cwd=generated,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
