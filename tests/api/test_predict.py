"""/v1 endpoints over HTTP (ASGI transport, app with its lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from PIL import Image

from imagegen import encode, formula_image, photo_like
from resnet_api.app import create_app
from resnet_api.settings import Settings

PROBLEM = "application/problem+json"


def jpeg_file(seed: int = 0, name: str = "photo.jpg") -> tuple[str, bytes, str]:
    return (name, photo_like(seed=seed), "image/jpeg")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


async def test_predict_answers_top_k_with_model_image_and_timings(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/predict", files={"file": jpeg_file()})
    assert response.status_code == 200
    body = response.json()
    predictions = body["predictions"]
    assert len(predictions) == 3
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert all(0 <= p["score"] <= 1 and 0 <= p["index"] < 1000 and p["label"] for p in predictions)
    assert body["model"]["name"] == "resnet18"
    assert body["model"]["untrained"] is False  # a path to a state_dict: not flagged
    assert body["image"] == {"width": 320, "height": 240, "format": "JPEG"}
    timings = body["timings"]
    assert timings["total_ms"] >= timings["inference_ms"] > 0
    assert timings["decode_ms"] > 0
    assert timings["batch_size"] >= 1


async def test_predict_top_k_and_min_score(client: httpx.AsyncClient) -> None:
    many = (await client.post("/v1/predict?top_k=10", files={"file": jpeg_file()})).json()["predictions"]
    assert len(many) == 10
    cut = many[4]["score"]
    some = (await client.post(f"/v1/predict?top_k=10&min_score={cut}", files={"file": jpeg_file()})).json()
    assert [p["index"] for p in some["predictions"]] == [p["index"] for p in many[:5]]


async def test_format_is_judged_by_content_not_name(client: httpx.AsyncClient) -> None:
    png = encode(formula_image(64, 48), "PNG")
    response = await client.post("/v1/predict", files={"file": ("photo.jpg", png, "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["image"]["format"] == "PNG"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"this is plain text", 415, "unsupported_media_type"),
        (b"", 400, "invalid_image"),
        (photo_like()[:300], 400, "invalid_image"),
    ],
)
async def test_bad_images_get_problems(client: httpx.AsyncClient, payload: bytes, status: int, code: str) -> None:
    response = await client.post("/v1/predict", files={"file": ("x.jpg", payload, "image/jpeg")})
    assert_problem(response, status, code)


@pytest.mark.parametrize(
    ("url", "files"),
    [
        ("/v1/predict?top_k=0", {"file": jpeg_file()}),
        ("/v1/predict?top_k=1001", {"file": jpeg_file()}),
        ("/v1/predict?min_score=2", {"file": jpeg_file()}),
        ("/v1/predict", {"other": jpeg_file()}),
    ],
)
async def test_invalid_parameters_are_422(client: httpx.AsyncClient, url: str, files: dict[str, object]) -> None:
    body = assert_problem(await client.post(url, files=files), 422, "validation_error")
    assert body["errors"]


async def test_several_files_on_a_one_image_route_are_refused(client: httpx.AsyncClient) -> None:
    """The second file used to be ignored: its sender got one answer for two images and no word why."""
    two = [("file", jpeg_file(seed=1)), ("file", jpeg_file(seed=2))]
    for url in ("/v1/predict", "/v1/embed"):
        body = assert_problem(await client.post(url, files=two), 422, "validation_error")
        assert body["errors"] == [
            {
                "loc": ["body", "file"],
                "msg": "2 files sent in `file`: send one, or several to /v1/predict/batch as `files`",
                "type": "too_long",
            }
        ]


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/predict"), 422, "validation_error")


@pytest.fixture
async def small_limits_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    limited = settings.model_copy(
        update={"max_upload_bytes": 20_000, "max_request_bytes": 1_000_000, "max_image_pixels": 500_000}
    )
    app = create_app(limited)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        yield c


async def test_file_over_upload_limit_is_413(small_limits_client: httpx.AsyncClient) -> None:
    big = photo_like(640, 480, seed=3, fmt="PNG")
    assert len(big) > 20_000
    body = assert_problem(
        await small_limits_client.post("/v1/predict", files={"file": ("big.png", big, "image/png")}),
        413,
        "payload_too_large",
    )
    assert "RESNET_API_MAX_UPLOAD_BYTES" in str(body["detail"])


async def test_batch_entries_refused_before_the_model_are_counted(small_limits_client: httpx.AsyncClient) -> None:
    """A batch answers 200 with the refused entries inside: `images_total` is where monitoring sees them."""
    big = photo_like(640, 480, seed=3, fmt="PNG")
    files = [("files", ("big.png", big, "image/png")), ("files", jpeg_file())]
    results = (await small_limits_client.post("/v1/predict/batch", files=files)).json()["results"]
    assert [r["ok"] for r in results] == [False, True]
    garbled = {"images": [{"image": "not*base64"}]}
    assert (await small_limits_client.post("/v1/predict/batch", json=garbled)).json()["results"][0]["ok"] is False
    text = (await small_limits_client.get("/metrics")).text
    assert 'resnet_api_images_total{outcome="payload_too_large"} 1.0' in text
    assert 'resnet_api_images_total{outcome="invalid_image"} 1.0' in text
    assert 'resnet_api_images_total{outcome="ok"} 1.0' in text


async def test_body_over_request_limit_is_413_even_when_streamed(small_limits_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        yield b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        for _ in range(300):
            yield b"x" * 10_000

    response = await small_limits_client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=abc"}
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert "RESNET_API_MAX_REQUEST_BYTES" in str(body["detail"])


async def test_declared_content_length_over_limit_is_refused_at_once(small_limits_client: httpx.AsyncClient) -> None:
    response = await small_limits_client.post("/v1/predict", content=b"x" * 2_000_000)
    body = assert_problem(response, 413, "payload_too_large")
    assert "RESNET_API_MAX_REQUEST_BYTES" in str(body["detail"])


async def test_too_many_pixels_is_413(small_limits_client: httpx.AsyncClient) -> None:
    bomb = encode(Image.new("L", (1000, 1000)), "PNG")
    response = await small_limits_client.post("/v1/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert_problem(response, 413, "image_too_large")


async def test_service_keeps_serving_after_errors(small_limits_client: httpx.AsyncClient) -> None:
    for payload in (b"junk", b"", photo_like(640, 480, fmt="PNG")):
        await small_limits_client.post("/v1/predict", files={"file": ("x", payload, "image/png")})
    assert (await small_limits_client.post("/v1/predict", files={"file": jpeg_file()})).status_code == 200


async def test_batch_keeps_order_and_isolates_bad_files(client: httpx.AsyncClient) -> None:
    single = (await client.post("/v1/predict", files={"file": jpeg_file(seed=2)})).json()
    files = [
        ("files", jpeg_file(seed=1, name="one.jpg")),
        ("files", ("bad.txt", b"hello", "text/plain")),
        ("files", jpeg_file(seed=2, name="two.jpg")),
    ]
    response = await client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["filename"] for r in results] == ["one.jpg", "bad.txt", "two.jpg"]
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["error"]["code"] == "unsupported_media_type"
    assert results[1]["error"]["status"] == 415
    assert [p["index"] for p in results[2]["predictions"]] == [p["index"] for p in single["predictions"]]


async def test_problems_omit_errors_when_there_are_none(client: httpx.AsyncClient) -> None:
    """`errors` is listed only for validation problems: absent (not null) elsewhere, as the schema documents."""
    batch = await client.post("/v1/predict/batch", files=[("files", ("bad.txt", b"hello", "text/plain"))])
    item_problem = batch.json()["results"][0]["error"]
    assert item_problem["code"] == "unsupported_media_type"
    assert "errors" not in item_problem
    assert "errors" not in assert_problem(
        await client.post("/v1/predict", files={"file": ("x.jpg", b"", "image/jpeg")}), 400, "invalid_image"
    )
    assert assert_problem(
        await client.post("/v1/predict?top_k=0", files={"file": jpeg_file()}), 422, "validation_error"
    )["errors"]
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["Problem"]
    assert schema["properties"]["errors"]["type"] == "array"
    assert "errors" not in schema["required"]


async def test_batch_file_cap(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_batch_files": 2}))
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        files = [("files", jpeg_file(seed=i)) for i in range(3)]
        assert_problem(await c.post("/v1/predict/batch", files=files), 413, "too_many_files")


async def test_embed(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/embed", files={"file": jpeg_file()})).json()
    assert body["dim"] == len(body["embedding"]) == 512
    assert body["normalized"] is True
    assert sum(v * v for v in body["embedding"]) == pytest.approx(1.0, abs=1e-6)
    raw = (await client.post("/v1/embed?normalize=false", files={"file": jpeg_file()})).json()
    assert raw["normalized"] is False
    assert sum(v * v for v in raw["embedding"]) > 1.5


async def test_labels_and_model(client: httpx.AsyncClient, settings: Settings) -> None:
    labels = (await client.get("/v1/labels")).json()
    assert labels["count"] == 1000
    assert labels["labels"][0] == "tench"
    model = (await client.get("/v1/model")).json()
    assert model["name"] == "resnet18"
    assert (model["backend"], model["runtime"], model["precision"]) == ("torch", "torch", "fp32")
    assert model["weights"] == "resnet18-test.pth"
    assert len(model["weights_sha256"]) == 64
    assert model["batching"]["max_batch_size"] == settings.max_batch_size
    parallel = min(2, settings.torch_threads)  # torch: two batches side by side when there are two threads to split
    assert model["batching"]["parallel_batches"] == parallel
    assert model["batching"]["images_per_batch"] == settings.max_batch_size // parallel
    assert model["threads"]["torch_intra_op"] == settings.torch_threads
    assert model["untrained"] is False
    assert model["warning"] is None


async def test_untrained_weights_are_flagged_everywhere(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"weights": "random"}))
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        model = (await c.get("/v1/model")).json()
        predict = (await c.post("/v1/predict", files={"file": jpeg_file()})).json()
        embed = (await c.post("/v1/embed", files={"file": jpeg_file()})).json()
        batch = (await c.post("/v1/predict/batch", files=[("files", jpeg_file())])).json()
    assert model["untrained"] is True
    assert predict["model"]["untrained"] is True
    for body in (model, predict, embed, batch):
        assert "UNTRAINED" in body["warning"]


async def test_full_queue_answers_503_with_retry_after(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_queue_size": 1, "max_batch_size": 1, "max_batch_wait_ms": 0.0})
    app = create_app(tight)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        responses = await asyncio.gather(*(c.post("/v1/predict", files={"file": jpeg_file(seed=i)}) for i in range(24)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}
        assert 200 in statuses
        assert 503 in statuses
        for r in responses:
            if r.status_code == 503:
                assert_problem(r, 503, "overloaded")
                assert r.headers["retry-after"] == str(tight.retry_after_seconds)
        assert (await c.post("/v1/predict", files={"file": jpeg_file()})).status_code == 200


async def test_unknown_path_uses_the_problem_shape(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nope"), 404, "not_found")
    assert_problem(await client.get("/v1/predict"), 405, "method_not_allowed")


async def test_a_batch_is_admitted_whole_or_refused_whole(settings: Settings) -> None:
    """More images than the service has room for: one 503 with Retry-After, not a 200 with the tail refused."""
    app = create_app(settings.model_copy(update={"max_queue_size": 3}))
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        never_fits = await c.post("/v1/predict/batch", files=[("files", jpeg_file(seed=i)) for i in range(4)])
        assert_problem(never_fits, 413, "too_many_files")  # more than the service ever admits: no point retrying
        three = [("files", jpeg_file(seed=i)) for i in range(3)]
        with app.state.service._admit():  # one image in the service (held here): no room for three
            busy = await c.post("/v1/predict/batch", files=three)
        assert_problem(busy, 503, "overloaded")
        assert int(busy.headers["retry-after"]) >= 1
        fits = await c.post("/v1/predict/batch", files=three)
        assert fits.status_code == 200
        assert [r["ok"] for r in fits.json()["results"]] == [True, True, True]
