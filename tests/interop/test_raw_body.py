"""The image file itself as the body of /v1/predict and /v1/embed (`curl --data-binary @cat.jpg -H 'Content-Type:
image/jpeg'`, as TorchServe and most vision APIs take it): the same answers and errors as multipart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imagegen import photo_like

LIMIT = 256 * 1024  # RESNET_API_MAX_UPLOAD_BYTES of the interop server


@pytest.fixture(scope="module")
def http(interop_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=interop_server, timeout=60.0) as client:
        yield client


def scores(body: dict[str, Any]) -> list[tuple[int, float]]:
    return [(p["index"], round(p["score"], 6)) for p in body["predictions"]]


def raw(data: bytes, media_type: str) -> dict[str, Any]:
    return {"content": data, "headers": {"content-type": media_type}}


def test_the_file_as_the_body_gives_the_multipart_answer(http: httpx.Client) -> None:
    jpeg, png = photo_like(seed=31), photo_like(seed=32, fmt="PNG")
    by_form = http.post("/v1/predict?top_k=4", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert by_form.status_code == 200
    for media_type in ("image/jpeg", "application/octet-stream", "IMAGE/JPEG; charset=binary", "image/png"):
        # the type names the body's kind; the format is read from the bytes, as for a multipart file
        answer = http.post("/v1/predict?top_k=4", **raw(jpeg, media_type))
        assert answer.status_code == 200, (media_type, answer.text)
        assert scores(answer.json()) == scores(by_form.json()), media_type
        assert answer.json()["image"]["format"] == "JPEG"
    as_png = http.post("/v1/predict", **raw(png, "image/png")).json()
    assert (as_png["image"]["format"], as_png["image"]["width"]) == ("PNG", 320)
    by_body = http.post("/v1/embed", **raw(jpeg, "image/jpeg")).json()
    by_file = http.post("/v1/embed", files={"file": ("a.jpg", jpeg)}).json()
    assert by_body["embedding"] == pytest.approx(by_file["embedding"], abs=1e-6)


def test_the_file_as_the_body_gets_the_multipart_errors(http: httpx.Client) -> None:
    cases = [
        (b"\xff" * (LIMIT + 1), 413, "payload_too_large"),
        (b"plain text", 415, "unsupported_media_type"),
        (photo_like()[:200], 400, "invalid_image"),
    ]
    for data, status, code in cases:
        by_body = http.post("/v1/predict", **raw(data, "image/jpeg"))
        by_form = http.post("/v1/predict", files={"file": ("f", data)})
        assert (
            (by_body.status_code, by_body.json()["code"])
            == (status, code)
            == (by_form.status_code, by_form.json()["code"])
        )
        assert by_body.headers["content-type"] == "application/problem+json"
    assert (
        f"{LIMIT}-byte upload limit"
        in http.post("/v1/predict", **raw(b"\xff" * (LIMIT + 1), "image/jpeg")).json()["detail"]
    )


def test_an_empty_body_is_refused_as_an_empty_file_is(http: httpx.Client) -> None:
    by_body = http.post("/v1/predict", **raw(b"", "application/octet-stream"))
    by_form = http.post("/v1/predict", files={"file": ("f", b"")})
    assert (by_body.status_code, by_body.json()["code"]) == (by_form.status_code, by_form.json()["code"])
    assert by_body.status_code == 400
    assert by_body.json()["detail"] == by_form.json()["detail"] == "the file is empty"


def test_a_streamed_body_over_the_limit_is_a_413_and_the_server_keeps_serving(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length for a middleware to refuse it by
        for _ in range(64):
            yield b"\xff" * (16 * 1024)

    answer = http.post("/v1/predict", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    assert http.post("/v1/predict", **raw(photo_like(seed=33), "image/jpeg")).status_code == 200


@pytest.mark.parametrize("path", ["/v1/predict/batch", "/v1/classifiers"])
def test_routes_of_several_images_refuse_a_raw_body_and_say_what_they_take(http: httpx.Client, path: str) -> None:
    answer = http.post(path, **raw(photo_like(seed=34), "image/jpeg"))
    assert answer.status_code == 415
    problem = answer.json()
    assert problem["code"] == "unsupported_media_type"
    assert "multipart/form-data" in problem["detail"]
    assert "application/json" in problem["detail"]
    assert "octet-stream" not in problem["detail"]


def test_other_types_are_refused_with_every_accepted_body_named(http: httpx.Client) -> None:
    answer = http.post("/v1/predict", **raw(b"a cat", "text/plain"))
    assert answer.status_code == 415
    detail = answer.json()["detail"]
    assert "text/plain" in detail
    for accepted in ("multipart/form-data", "application/json", "image/jpeg", "application/octet-stream"):
        assert accepted in detail
