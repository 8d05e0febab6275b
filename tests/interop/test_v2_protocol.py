"""The Open Inference Protocol over plain HTTP: wire details that a client library hides."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from imagegen import photo_like
from resnet_api.api.limits import BodySizeLimit
from resnet_api.app import create_app
from resnet_api.settings import Settings

INFER = "/v2/models/resnet18/infer"


@pytest.fixture(scope="module")
def http(interop_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=interop_server, timeout=60.0) as client:
        yield client


def image_request(*images: bytes, **output_params: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "image",
                "shape": [len(images)],
                "datatype": "BYTES",
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": output_params}],
    }


def test_health_answers_have_empty_bodies(http: httpx.Client) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/resnet18/ready"):
        answer = http.get(path)
        assert (answer.status_code, answer.content) == (200, b""), path
    assert http.get("/v2").json()["name"] == "resnet-api"
    assert http.get("/v2/models/resnet18/versions/1").json()["platform"] == "pytorch"


def test_json_bytes_input_gives_the_v1_probabilities(http: httpx.Client) -> None:
    image = photo_like(seed=61)
    answer = http.post(INFER, json={**image_request(image), "id": "abc"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("resnet18", "1", "abc")
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [1, 1000])
    probabilities = np.array(output["data"])
    v1 = http.post("/v1/predict?top_k=5", files={"file": ("a.jpg", image)}).json()
    assert [p["index"] for p in v1["predictions"]] == list(np.argsort(-probabilities, kind="stable")[:5])
    assert [p["score"] for p in v1["predictions"]] == pytest.approx(np.sort(probabilities)[::-1][:5], abs=1e-6)


def test_classification_strings_in_json(http: httpx.Client) -> None:
    answer = http.post(INFER, json=image_request(photo_like(seed=62), photo_like(seed=63), classification=2)).json()
    [output] = answer["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [2, 2])
    for item in output["data"]:
        score, index, label = item.split(":", 2)
        assert len(score.split(".")[1]) == 6  # printf("%f"), as Triton formats it
        assert 0 <= int(index) < 1000
        assert label


def test_binary_fp32_request_and_response_layout(http: httpx.Client) -> None:
    tensor = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype("<f4")
    raw = tensor.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "tensor",
                    "shape": [2, 3, 224, 224],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "features", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True, "classification": 1}},
            ],
        }
    ).encode()
    answer = http.post(INFER, content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    size = int(answer.headers["inference-header-content-length"])
    meta = json.loads(answer.content[:size])
    features_meta, classes_meta = meta["outputs"]
    assert features_meta["parameters"]["binary_data_size"] == 2 * 512 * 4
    features = np.frombuffer(answer.content[size : size + 2 * 512 * 4], dtype="<f4").reshape(2, 512)
    assert features.shape == (2, 512)
    assert np.isfinite(features).all()
    tail = answer.content[size + 2 * 512 * 4 :]
    assert len(tail) == classes_meta["parameters"]["binary_data_size"]
    (first_length,) = struct.unpack_from("<I", tail)
    assert tail[4 : 4 + first_length].decode().count(":") >= 2

    gzipped = http.post(
        INFER,
        content=gzip.compress(header + raw),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Encoding": "gzip"},
    )
    assert gzipped.status_code == 200
    assert gzipped.content[size:] == answer.content[size:]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/resnet50/infer", {"inputs": []}, 404, "unknown model"),
        ("/v2/models/resnet18/versions/7/infer", {"inputs": []}, 404, "version 7"),
        (INFER, {"inputs": []}, 400, "malformed"),
        (
            INFER,
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
            400,
            "unexpected inference input",
        ),
        (
            INFER,
            {"inputs": [{"name": "tensor", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": [1.0]}]},
            400,
            "elements",
        ),
        (
            INFER,
            {"inputs": [{"name": "tensor", "shape": [1, 3, 224, 224], "datatype": "INT8", "data": [1]}]},
            400,
            "FP32",
        ),
        (INFER, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@"]}]}, 400, "base64"),
        (
            INFER,
            {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]},
            400,
            "shape says 2",
        ),
        (
            INFER,
            {"inputs": [{"name": "image", "shape": [40], "datatype": "BYTES", "data": ["aGk="] * 40}]},
            413,
            "at most 32",
        ),
        (
            INFER,
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]},
            415,
            "not a recognised image",
        ),
        (INFER, image_request(b"\xff" * (300 * 1024)), 413, "upload limit"),
        (INFER, {**image_request(photo_like()), "outputs": [{"name": "logits"}]}, 400, "unexpected inference output"),
    ],
)
def test_errors_use_the_protocol_shape(http: httpx.Client, path: str, body: Any, status: int, message: str) -> None:
    answer = http.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["error"]
    assert message in answer.json()["error"]


async def test_unsupported_methods_get_the_protocol_shape_with_allow(settings: Settings) -> None:
    app = create_app(settings)  # routing answers the 405 before any handler: no model needed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        # Each path the protocol offers names exactly its own methods.
        for path, allow in ((INFER, "POST"), ("/v2/models/resnet18", "GET, HEAD")):
            for method in ("PATCH", "PUT", "DELETE", "GET" if allow == "POST" else "POST"):
                answer = await client.request(method, path)
                assert (answer.status_code, answer.headers.get("allow")) == (405, allow), (method, path)
                assert answer.headers["content-type"] == "application/json", path
                assert list(answer.json()) == ["error"], path
        for method in ("GET", "PATCH"):  # a path it does not offer: 404 whatever the method
            answer = await client.request(method, "/v2/anything")
            assert answer.status_code == 404, method
            assert answer.json()["error"].startswith("/v2/anything is not offered: this server implements"), method
        v1 = await client.patch("/v1/predict")
    assert (v1.status_code, v1.headers["content-type"]) == (405, "application/problem+json")


def test_binary_sizes_must_add_up(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "tensor", "shape": [1, 3, 224, 224], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    short = http.post(INFER, content=header + b"\0" * 4, headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400
    assert "past the end" in short.json()["error"]
    wrong = http.post(INFER, content=header + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(header))})
    assert wrong.status_code == 400
    assert "needs 602112" in wrong.json()["error"]
    bad_length = http.post(INFER, content=header, headers={"Inference-Header-Content-Length": "lots"})
    assert bad_length.status_code == 400


async def test_v2_requests_share_the_v1_batcher(settings: Settings) -> None:
    """Four tensors of one V2 request and a /v1 batch run in fewer forward passes than images."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        service = app.state.service
        before = service.batches_run
        v2_answer, v1_answer = await _v2_and_v1_together(client)
        after = service.batches_run
    assert v2_answer.status_code == v1_answer.status_code == 200
    assert v2_answer.json()["outputs"][0]["shape"] == [4, 1000]
    assert 1 <= after - before < 8


async def _v2_and_v1_together(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    tensors = np.zeros((4, 3, 224, 224), dtype=np.float32).tolist()
    v2 = client.post(
        INFER, json={"inputs": [{"name": "tensor", "shape": [4, 3, 224, 224], "datatype": "FP32", "data": tensors}]}
    )
    v1 = client.post("/v1/predict/batch", files=[("files", (f"{i}.jpg", photo_like(seed=i))) for i in range(4)])
    v2_answer, v1_answer = await asyncio.gather(v2, v1)
    return v2_answer, v1_answer


async def test_oversized_v2_bodies_are_refused_in_the_protocol_shape() -> None:
    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the body limit should answer first")

    limit = BodySizeLimit(never_called, max_bytes=1024)
    for path, content_type in ((INFER, "application/json"), ("/v1/predict", "application/problem+json")):
        sent: list[dict[str, Any]] = []

        async def send(message: Any, sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"4096")]}
        await limit(scope, None, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 413
        assert dict(sent[0]["headers"])[b"content-type"] == content_type.encode()
        body = json.loads(sent[1]["body"])
        assert ("error" in body) == (path == INFER)


async def test_before_start_up_readiness_fails_and_infer_asks_to_retry(settings: Settings) -> None:
    app = create_app(settings)  # no lifespan: the model is not loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 400
        assert (await client.get("/v2/models/resnet18/ready")).status_code == 400
        answer = await client.post(INFER, json=image_request(photo_like()))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(settings.retry_after_seconds)
    assert "loading" in answer.json()["error"]


def test_unknown_v2_paths_are_protocol_404s(http: httpx.Client) -> None:
    answer = http.get("/v2/models/resnet18/config")
    assert answer.status_code == 404
    assert "not offered" in answer.json()["error"]


async def test_a_fault_answers_500_in_each_api_s_own_shape_and_the_service_keeps_serving(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnet_api.inference.service import InferenceService

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    image = photo_like(64, 48, seed=1)
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        # The transport raises what escapes the app: the 500 must be an answer, not an exception (uvicorn would
        # then close the connection) that Starlette's outermost handler answers without the request id.
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        with monkeypatch.context() as patch:
            patch.setattr(InferenceService, "classify", broken)
            patch.setattr(InferenceService, "infer_images", broken)
            v1 = await client.post(
                "/v1/predict", files={"file": ("a.jpg", image, "image/jpeg")}, headers={"X-Request-ID": "fault-1"}
            )
            v2 = await client.post(INFER, json=image_request(image), headers={"X-Request-ID": "fault-2"})
        after = await client.post(INFER, json=image_request(image))
    assert (v1.status_code, v1.headers["content-type"]) == (500, "application/problem+json")
    assert v1.json()["code"] == "internal_error"
    assert v1.headers["x-request-id"] == "fault-1"  # what a user quotes to find the traceback in the log
    assert (v2.status_code, v2.headers["content-type"]) == (500, "application/json")
    assert v2.json() == {"error": "the server failed; it keeps serving"}
    assert v2.headers["x-request-id"] == "fault-2"
    assert after.status_code == 200
