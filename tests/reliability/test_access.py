"""API keys, CORS, request ids and the JSON access log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from imagegen import photo_like
from resnet_api.app import create_app
from resnet_api.logs import JsonFormatter
from resnet_api.settings import Settings, SettingsError

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"


@asynccontextmanager
async def client_for(weights_file: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        weights=str(weights_file),
        allow_download=False,
        warmup=False,
        torch_threads=1,
        **overrides,  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield client


async def test_without_keys_everything_is_open(weights_file: Path) -> None:
    async with client_for(weights_file) as client:
        assert (await client.get("/v1/model")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_api_keys_guard_v1_with_bearer_or_x_api_key(weights_file: Path) -> None:
    async with client_for(weights_file, api_keys=f"{KEY_A},{KEY_B}") as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-key-0123456789"},
            {"X-API-Key": KEY_A + "x"},
            {"Authorization": f"Basic {KEY_A}"},
            {"Authorization": "Bearer"},
        ):
            response = await client.get("/v1/model", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["code"] == "unauthorized"
        assert (await client.get("/v1/model", headers={"Authorization": f"Bearer {KEY_A}"})).status_code == 200
        assert (await client.get("/v1/model", headers={"authorization": f"bearer {KEY_B}"})).status_code == 200
        assert (await client.get("/v1/labels", headers={"X-API-Key": KEY_B})).status_code == 200
        files = {"file": ("a.jpg", photo_like(64, 64), "image/jpeg")}
        assert (await client.post("/v1/predict", files=files)).status_code == 401
        ok = await client.post("/v1/predict", files=files, headers={"X-API-Key": KEY_A})
        assert ok.status_code == 200
        # Probes and docs stay open unless asked otherwise.
        for path in ("/livez", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


async def test_the_key_check_happens_before_the_body_is_read(weights_file: Path) -> None:
    async with client_for(weights_file, api_keys=KEY_A, max_request_bytes=4096) as client:
        response = await client.post("/v1/predict", files={"file": ("a.jpg", bytes(100_000), "image/jpeg")})
        assert response.status_code == 401


async def test_probes_can_be_closed_too(weights_file: Path) -> None:
    async with client_for(weights_file, api_keys=KEY_A, protect_probes=True) as client:
        for path in ("/livez", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers={"X-API-Key": KEY_A})).status_code == 200, path


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        Settings(api_keys="short")


async def test_cors_is_closed_by_default(weights_file: Path) -> None:
    async with client_for(weights_file) as client:
        preflight = await client.options(
            "/v1/predict",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        response = await client.get("/v1/model", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_only_the_configured_origins(weights_file: Path) -> None:
    async with client_for(weights_file, cors_origins="https://app.example", api_keys=KEY_A) as client:
        preflight = await client.options(
            "/v1/predict",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200  # preflights need no key
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        delete = await client.options(  # every method the API offers: a page may delete its classifiers
            "/v1/classifiers/abc",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
        )
        assert delete.status_code == 200, delete.text
        assert "DELETE" in delete.headers["access-control-allow-methods"]
        response = await client.get("/v1/model", headers={"Origin": "https://app.example", "X-API-Key": KEY_A})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        other = await client.get("/v1/model", headers={"Origin": "https://evil.example", "X-API-Key": KEY_A})
        assert "access-control-allow-origin" not in other.headers


async def test_every_response_has_a_request_id_and_a_json_log_line(
    weights_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resnet_api.access")
    async with client_for(weights_file, api_keys=KEY_A, max_request_bytes=2048) as client:
        responses = {
            "ok": await client.get("/livez"),
            "given": await client.get("/livez", headers={"X-Request-ID": "trace-42.abc"}),
            "unsafe": await client.get("/livez", headers={"X-Request-ID": "bad id\twith spaces"}),
            "too_long": await client.get("/livez", headers={"X-Request-ID": "x" * 200}),
            "401": await client.get("/v1/model"),
            "404": await client.get("/nope", headers={"X-Request-ID": "req-404"}),
            "413": await client.post("/v1/predict", content=bytes(4096), headers={"X-API-Key": KEY_A}),
            "metrics": await client.get("/metrics"),
        }
    assert responses["given"].headers["x-request-id"] == "trace-42.abc"
    assert responses["401"].status_code == 401
    assert responses["413"].status_code == 413
    for name in ("ok", "unsafe", "too_long", "401", "413"):
        assert re.fullmatch(r"[0-9a-f]{32}", responses[name].headers["x-request-id"]), name
    assert len({r.headers["x-request-id"] for r in responses.values()}) == len(responses)
    # The 401 and the 413 come before routing: still counted under the route they were for, not "unmatched".
    metrics = responses["metrics"].text
    assert 'resnet_api_http_requests_total{method="GET",route="/v1/model",status="401"} 1.0' in metrics
    assert 'resnet_api_http_requests_total{method="POST",route="/v1/predict",status="413"} 1.0' in metrics
    assert 'resnet_api_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in metrics

    records = [r for r in caplog.records if r.name == "resnet_api.access"]
    by_id = {getattr(r, "request_id", None): r for r in records}
    for name, response in responses.items():
        record = by_id[response.headers["x-request-id"]]
        line = json.loads(JsonFormatter().format(record))
        assert line["request_id"] == response.headers["x-request-id"], name
        assert line["status"] == response.status_code
        assert line["path"] == response.request.url.path
        assert line["level"] == "info"
        assert line["duration_ms"] >= 0


async def test_slow_upload_gets_408(weights_file: Path) -> None:
    async with client_for(weights_file, body_timeout_seconds=0.5) as client:

        async def trickle() -> AsyncIterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            for _ in range(20):
                await asyncio.sleep(0.1)
                yield b"\x00" * 10

        response = await client.post(
            "/v1/predict", content=trickle(), headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        assert response.status_code == 408
        assert response.json()["code"] == "request_timeout"


def test_list_settings_take_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_API_API_KEYS", "[]")  # docker-compose.yml's rendering of an unset variable
    monkeypatch.setenv("RESNET_API_CORS_ORIGINS", "https://a.example, https://b.example")
    settings = Settings()
    assert settings.all_api_keys() == []
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    monkeypatch.setenv("RESNET_API_API_KEYS", f'["{KEY_A}", "{KEY_B}"]')
    assert [k.get_secret_value() for k in Settings().api_keys] == [KEY_A, KEY_B]


async def test_keys_can_come_from_a_secret_file(weights_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text(f"# rotated 2026-11\n{KEY_B}\n\n")
    async with client_for(weights_file, api_keys=KEY_A, api_keys_file=secret) as client:
        assert (await client.get("/v1/model")).status_code == 401
        assert (await client.get("/v1/model", headers={"X-API-Key": KEY_A})).status_code == 200
        assert (await client.get("/v1/model", headers={"X-API-Key": KEY_B})).status_code == 200


def test_a_key_file_or_list_without_keys_is_refused_not_taken_as_no_auth(weights_file: Path, tmp_path: Path) -> None:
    """The operator asked for keys: an empty or comment-only file, or ",", used to serve every path open."""
    comments = tmp_path / "keys"
    comments.write_text("# TODO: put the keys here\n\n   \n")
    with pytest.raises(SettingsError, match="no API key in the file"):
        Settings(api_keys_file=comments).all_api_keys()
    with pytest.raises(SettingsError, match="no API key in the file"):
        create_app(Settings(weights=str(weights_file), api_keys_file=comments))
    with pytest.raises(ValueError, match="no API key given"):
        Settings(api_keys=",")
    with pytest.raises(ValueError, match="printable ASCII"):
        Settings(api_keys="clé-secrète-0123456789")  # matched only when a client sent it as latin-1
    with pytest.raises(ValueError, match="printable ASCII"):
        Settings(api_keys="key with spaces 0123456789")
    accented = tmp_path / "accented"
    accented.write_text("clé-secrète-0123456789\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="printable ASCII"):
        Settings(api_keys_file=accented).all_api_keys()
    latin1 = tmp_path / "latin1"
    latin1.write_bytes("clé-secrète-0123456789\n".encode("latin-1"))
    with pytest.raises(SettingsError, match="not UTF-8"):
        Settings(api_keys_file=latin1).all_api_keys()


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "application/json"])
async def test_a_client_leaving_mid_upload_is_a_499_not_a_server_fault(
    weights_file: Path, caplog: pytest.LogCaptureFixture, content_type: str
) -> None:
    """Starlette's ClientDisconnect from reading the body used to be logged with a traceback and counted as a 500."""
    settings = Settings(weights=str(weights_file), allow_download=False, warmup=False, torch_threads=1)
    app = create_app(settings)
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"100000")]
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    incoming = [
        {"type": "http.request", "body": b"--x\r\n" if "multipart" in content_type else b'{"im', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        caplog.set_level(logging.INFO)
        await manager.app(scope, receive, send)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            metrics = (await client.get("/metrics")).text
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 'route="/v1/predict",status="499"' in metrics
    assert 'route="/v1/predict",status="500"' not in metrics


async def test_405_names_every_method_of_the_path(weights_file: Path) -> None:
    async with client_for(weights_file) as client:
        response = await client.request("PUT", "/v1/classifiers")
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
        assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}
