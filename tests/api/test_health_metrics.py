"""Probes and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import threading

import httpx
from asgi_lifespan import LifespanManager

from imagegen import photo_like
from resnet_api.app import create_app
from resnet_api.inference.model import LoadedWeights
from resnet_api.inference.service import load_weights
from resnet_api.settings import Settings


async def test_readyz_is_503_before_startup_and_200_after(settings: Settings) -> None:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = await c.get("/readyz")
        assert before.status_code == 503
        assert before.json()["code"] == "not_ready"
        assert "retry-after" in before.headers
        assert (await c.get("/livez")).status_code == 200
        predict = await c.post("/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")})
        assert predict.status_code == 503
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/readyz")).status_code == 503  # after shutdown


async def test_metrics_are_prometheus_text_without_redirect(client: httpx.AsyncClient) -> None:
    await client.post("/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")})
    await client.post("/v1/predict", files={"file": ("a.txt", b"nope", "text/plain")})
    response = await client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert 'resnet_api_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    assert 'resnet_api_http_requests_total{method="POST",route="/v1/predict",status="415"} 1.0' in text
    for name in (
        "resnet_api_http_request_duration_seconds_bucket",
        "resnet_api_queue_wait_seconds_count 1.0",
        "resnet_api_preprocess_seconds_count 1.0",
        "resnet_api_inference_seconds_count",
        "resnet_api_batch_size_count",
        "resnet_api_queue_depth 0.0",
        "resnet_api_ready 1.0",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        'resnet_api_model_info{backend="torch",name="resnet18",precision="fp32",runtime="torch"',
        'resnet_api_images_total{outcome="unsupported_media_type"} 1.0',
    ):
        assert name in text, name


async def test_in_the_background_load_the_server_is_live_before_ready(settings: Settings) -> None:
    """`resnet-api serve` listens while the model loads: orchestrators see it alive, not ready; then ready."""
    release = threading.Event()

    def slow_loader(s: Settings) -> LoadedWeights:
        assert release.wait(60)
        return load_weights(s)

    app = create_app(settings, weights_loader=slow_loader, load_in_background=True)
    async with (
        LifespanManager(app, startup_timeout=10, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        assert (await c.get("/livez")).status_code == 200  # the start-up returned while the load waits
        ready = await c.get("/readyz")
        assert (ready.status_code, ready.json()["code"]) == (503, "not_ready")
        assert "retry-after" in ready.headers
        predict = await c.post("/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")})
        assert (predict.status_code, predict.json()["code"]) == (503, "not_ready")
        assert "resnet_api_ready 0.0" in (await c.get("/metrics")).text
        release.set()
        for _ in range(600):  # bounded: 60 s
            if (await c.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        predict = await c.post("/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")})
        assert predict.status_code == 200
        assert "resnet_api_ready 1.0" in (await c.get("/metrics")).text
        assert app.state.load_failed is False
    assert app.state.service is None  # closed at shutdown


async def test_a_failed_background_load_is_reported_and_the_server_stays_unready(settings: Settings) -> None:
    def broken_loader(s: Settings) -> LoadedWeights:
        raise RuntimeError("weights file is corrupt")

    app = create_app(settings, weights_loader=broken_loader, load_in_background=True)
    async with (
        LifespanManager(app, startup_timeout=10) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        for _ in range(300):  # bounded: 30 s
            if app.state.load_failed:
                break
            await asyncio.sleep(0.1)
        assert app.state.load_failed is True  # what `resnet-api serve` stops on, with exit code 1
        assert (await c.get("/readyz")).status_code == 503


async def test_probes_answer_head_like_get_and_stay_one_operation(settings: Settings) -> None:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = await c.head("/readyz")
        assert (before.status_code, before.content) == (503, b"")
        assert "retry-after" in before.headers
        live = await c.head("/livez")
        assert (live.status_code, live.content) == (200, b"")
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        ready = await c.head("/readyz")
        assert (ready.status_code, ready.content) == (200, b"")
        assert ready.headers["content-length"] == str(len((await c.get("/readyz")).content))
    paths = app.openapi()["paths"]
    assert (set(paths["/livez"]), set(paths["/readyz"]), set(paths["/metrics"])) == ({"get"}, {"get"}, {"get"})


HEAD_LIKE_GET = ("/metrics", "/v1/model", "/v1/labels", "/v1/classifiers", "/v2/health/live", "/v2/health/ready", "/")


async def test_every_get_path_answers_head_with_its_headers_and_no_body(client: httpx.AsyncClient) -> None:
    for path in HEAD_LIKE_GET:
        got, head = await client.get(path), await client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.status_code == 200, path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path  # /v2/health: none
        if path != "/metrics":  # its body grows with every request, the HEAD's own included
            assert head.headers["content-length"] == str(len(got.content)), path
    missing = await client.head("/v1/classifiers/nope")
    assert (missing.status_code, missing.content) == (404, b"")
    post_only = await client.head("/v1/predict")
    assert (post_only.status_code, post_only.headers["allow"]) == (405, "POST")
    wrong = await client.post("/v1/model")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, HEAD")
    text = (await client.get("/metrics")).text
    assert 'resnet_api_http_requests_total{method="HEAD",route="/v1/model",status="200"} 1.0' in text
    assert 'resnet_api_http_requests_total{method="HEAD",route="/v2/health/ready",status="200"} 1.0' in text


async def test_metrics_label_ui_docs_and_schema_by_route_not_raw_path(settings: Settings) -> None:
    app = create_app(settings)  # no model needed: static files, docs and /metrics answer without it
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in ("/", "/app.js", "/docs", "/redoc", "/openapi.json", "/static-offline-docs/swagger-ui.css"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.post("/app.js")).status_code == 405
        for path in ("/no-such-page", "/another/unknown/path", "/static-offline-docs/missing.js"):
            assert (await c.get(path)).status_code == 404, path
        text = (await c.get("/metrics")).text
    counted = 'resnet_api_http_requests_total{method="%s",route="%s",status="%s"}'
    for method, route, status, count in (
        ("GET", "/{path}", 200, 2),  # the Web UI's files, at "/"
        ("POST", "/{path}", 405, 1),
        ("GET", "/docs", 200, 1),
        ("GET", "/redoc", 200, 1),
        ("GET", "/openapi.json", 200, 1),
        ("GET", "/static-offline-docs/{path}", 200, 1),
        ("GET", "/static-offline-docs/{path}", 404, 1),
        ("GET", "unmatched", 404, 2),
    ):
        assert f"{counted % (method, route, status)} {count}.0" in text, (method, route, status)
    assert "no-such-page" not in text
    assert "swagger-ui.css" not in text
