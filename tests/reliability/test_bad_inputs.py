"""The bad-input corpus: every hostile upload gets a 200 or its exact 4xx problem, and the service keeps serving."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from corpus import CASES, Case, oriented_png

from imagegen import photo_like
from resnet_api.app import create_app
from resnet_api.settings import MiB, Settings

MAX_UPLOAD = 1 * MiB
MAX_REQUEST = 2 * MiB
MAX_FILES = 4
PER_CASE_LIMIT_S = 20.0  # generous for 2 busy cores; a bomb that really decoded would take far longer or OOM


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corpus_client(weights_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        weights=str(weights_file),
        allow_download=False,
        max_upload_bytes=MAX_UPLOAD,
        max_request_bytes=MAX_REQUEST,
        max_batch_files=MAX_FILES,
        max_form_fields=2,
        max_form_part_bytes=1024,
        torch_threads=1,
        decode_workers=2,
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield client


def _request_cases() -> list[tuple[str, dict[str, object], int, str]]:
    """Bad requests rather than bad images: (name, httpx.post kwargs, status, code)."""
    image = photo_like(64, 64)

    async def chunked(total: int):  # type: ignore[no-untyped-def]  # an async generator: no Content-Length
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        yield boundary
        for _ in range(total // 65536):
            yield bytes(65536)
        yield b"\r\n--xyz--\r\n"

    return [
        ("missing_file_field", {"files": {"other": ("a.jpg", image, "image/jpeg")}}, 422, "validation_error"),
        (
            "text_body",  # the image file itself is a body (image/*, application/octet-stream); text is not
            {"content": image, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "raw_noise_body",
            {"content": b"\x00\x01 noise" * 20, "headers": {"content-type": "application/octet-stream"}},
            415,
            "unsupported_media_type",
        ),
        ("json_not_base64", {"json": {"image": "%%% not base64 %%%"}}, 422, "validation_error"),
        (
            "json_noise_image",
            {"json": {"image": base64.b64encode(b"\x00\x01 noise" * 20).decode()}},
            415,
            "unsupported_media_type",
        ),
        (
            "json_broken_syntax",
            {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
            422,
            "validation_error",
        ),
        (
            "file_over_upload_limit",
            {"files": {"file": ("big.jpg", bytes(MAX_UPLOAD + 1), "image/jpeg")}},
            413,
            "payload_too_large",
        ),
        (
            "body_over_request_limit_with_length",
            {"files": {"file": ("b.jpg", bytes(MAX_REQUEST + 10), "image/jpeg")}},
            413,
            "payload_too_large",
        ),
        (
            "body_over_request_limit_chunked",
            {"content": chunked(3 * MiB), "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
            413,
            "payload_too_large",
        ),
        (
            "too_many_form_fields",
            {"files": {"file": ("a.jpg", image, "image/jpeg")}, "data": {"a": "1", "b": "2", "c": "3"}},
            400,
            "invalid_form",
        ),
        (
            "form_field_over_part_limit",
            {"files": {"file": ("a.jpg", image, "image/jpeg")}, "data": {"a": "x" * 5000}},
            400,
            "invalid_form",
        ),
        (
            "bad_top_k",
            {"files": {"file": ("a.jpg", image, "image/jpeg")}, "params": {"top_k": 0}},
            422,
            "validation_error",
        ),
    ]


REQUEST_CASES = _request_cases()


async def test_corpus_is_big_enough() -> None:
    assert len(CASES) + len(REQUEST_CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


async def _check_case(client: httpx.AsyncClient, case: Case) -> str | None:
    started = time.perf_counter()
    response = await client.post("/v1/predict", files={"file": (case.filename, case.make(), case.content_type)})
    elapsed = time.perf_counter() - started
    problems = []
    if response.status_code != case.status:
        problems.append(f"status {response.status_code} != {case.status}: {response.text[:300]}")
    elif case.code is not None:
        body = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        if body["code"] != case.code or body["status"] != case.status:
            problems.append(f"code {body['code']!r} != {case.code!r}: {body['detail']}")
    else:
        assert len(response.json()["predictions"]) == 3
    if elapsed > PER_CASE_LIMIT_S:
        problems.append(f"took {elapsed:.1f} s")
    return f"{case.name}: {'; '.join(problems)}" if problems else None


async def test_corpus_then_a_normal_image_still_classifies(corpus_client: httpx.AsyncClient) -> None:
    normal = ("cat.jpg", photo_like(320, 240, seed=7), "image/jpeg")
    before = await corpus_client.post("/v1/predict", files={"file": normal})
    assert before.status_code == 200

    failures = [f for case in CASES if (f := await _check_case(corpus_client, case)) is not None]
    for name, kwargs, status, code in REQUEST_CASES:
        response = await corpus_client.post("/v1/predict", **kwargs)  # type: ignore[arg-type]
        if response.status_code != status or response.json().get("code") != code:
            failures.append(f"{name}: got {response.status_code} {response.text[:200]}, want {status} {code}")
    batch = [("files", (f"{i}.jpg", photo_like(32, 32, seed=i), "image/jpeg")) for i in range(MAX_FILES + 1)]
    response = await corpus_client.post("/v1/predict/batch", files=batch)
    if response.status_code != 413 or response.json()["code"] != "too_many_files":
        failures.append(f"too_many_files: got {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)

    after = await corpus_client.post("/v1/predict", files={"file": normal})
    assert after.status_code == 200
    assert after.json()["predictions"] == before.json()["predictions"]
    assert (await corpus_client.get("/readyz")).status_code == 200


async def test_exif_orientations_2_to_8_are_applied(corpus_client: httpx.AsyncClient) -> None:
    """An image stored rotated or flipped with an EXIF tag classifies, and reports its size, like the upright original."""
    for orientation in range(2, 9):
        upright, stored = oriented_png(orientation)
        a = await corpus_client.post("/v1/predict", files={"file": ("up.png", upright, "image/png")})
        b = await corpus_client.post("/v1/predict", files={"file": ("rot.png", stored, "image/png")})
        assert a.status_code == b.status_code == 200
        assert a.json()["image"] == b.json()["image"]  # the size as shown: the upright original's
        assert a.json()["predictions"] == b.json()["predictions"], f"orientation {orientation}"
