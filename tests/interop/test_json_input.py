"""JSON bodies with base64 images beside multipart: same results, same limits, same errors."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, field_validator
from starlette.requests import Request

from imagegen import photo_like
from resnet_api.api.deps import JSON_ON_LOOP_BYTES, parse_json
from resnet_api.api.errors import MAX_REPORTED_ERRORS
from resnet_api.api.schemas import BatchEntryRead, BatchJSON, BatchJSONRead, ImageJSON

LIMIT = 256 * 1024  # RESNET_API_MAX_UPLOAD_BYTES of the interop server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def http(interop_server: str) -> httpx.Client:
    with httpx.Client(base_url=interop_server, timeout=60.0) as client:
        yield client


def scores(body: dict[str, Any]) -> list[tuple[int, float]]:
    return [(p["index"], round(p["score"], 6)) for p in body["predictions"]]


def test_json_and_multipart_give_the_same_answers(http: httpx.Client) -> None:
    image = photo_like(seed=11)
    multipart = http.post("/v1/predict?top_k=4", files={"file": ("a.jpg", image, "image/jpeg")})
    plain = http.post("/v1/predict?top_k=4", json={"image": b64(image)})
    data_url = http.post("/v1/predict?top_k=4", json={"image": "data:image/jpeg;base64," + b64(image)})
    text = b64(image).rstrip("=")  # unpadded, and wrapped at 76 columns like `base64` prints it
    wrapped = http.post(
        "/v1/predict?top_k=4", json={"image": "\n".join(text[i : i + 76] for i in range(0, len(text), 76))}
    )
    assert multipart.status_code == plain.status_code == data_url.status_code == wrapped.status_code == 200
    assert scores(plain.json()) == scores(multipart.json()) == scores(data_url.json()) == scores(wrapped.json())

    embed_json = http.post("/v1/embed", json={"image": b64(image)}).json()
    embed_form = http.post("/v1/embed", files={"file": ("a.jpg", image)}).json()
    assert embed_json["embedding"] == pytest.approx(embed_form["embedding"], abs=1e-6)


def test_json_batch_keeps_order_names_and_per_image_errors(http: httpx.Client) -> None:
    images = [photo_like(seed=s) for s in (21, 22)]
    body = {
        "images": [
            {"image": b64(images[0]), "filename": "first.jpg"},
            {"image": b64(b"not an image at all"), "filename": "notes.txt"},
            {"image": b64(b"\xff" * (LIMIT + 1)), "filename": "huge.jpg"},
            {"image": b64(images[1])},
            {"image": "not*base64", "filename": "garbled.b64"},
        ]
    }
    answer = http.post("/v1/predict/batch?top_k=2", json=body)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["index"], r["filename"], r["ok"]) for r in results] == [
        (0, "first.jpg", True),
        (1, "notes.txt", False),
        (2, "huge.jpg", False),
        (3, None, True),
        (4, "garbled.b64", False),
    ]
    assert results[1]["error"]["code"] == "unsupported_media_type"
    assert results[2]["error"]["code"] == "payload_too_large"
    # bad base64 fails its own entry, where it was a 422 for the whole batch
    assert (results[4]["error"]["code"], results[4]["error"]["status"]) == ("invalid_image", 400)
    assert "garbled.b64 is not valid base64" in results[4]["error"]["detail"]
    multipart = http.post("/v1/predict/batch?top_k=2", files=[("files", ("x.jpg", img)) for img in images]).json()
    assert [scores(r) for r in multipart["results"]] == [scores(results[0]), scores(results[3])]


def test_the_batch_body_is_read_with_the_documented_fields_and_bounds() -> None:
    """`BatchJSONRead` reads what `BatchJSON` documents; only bad base64 is left to its entry."""
    for documented, read in ((BatchJSON, BatchJSONRead), (ImageJSON, BatchEntryRead)):
        assert documented.model_fields.keys() == read.model_fields.keys()
        assert documented.model_config.get("extra") == read.model_config.get("extra") == "forbid"
    assert BatchJSON.model_fields["images"].metadata == BatchJSONRead.model_fields["images"].metadata
    assert ImageJSON.model_fields["filename"].metadata == BatchEntryRead.model_fields["filename"].metadata


def test_a_batch_entry_that_is_not_a_string_fails_the_request(http: httpx.Client) -> None:
    answer = http.post("/v1/predict/batch", json={"images": [{"image": b64(photo_like())}, {"image": 7}]})
    assert answer.status_code == 422
    assert ["body", "images", 1, "image"] in [e["loc"] for e in answer.json()["errors"]]


def test_json_errors_match_multipart_errors(http: httpx.Client) -> None:
    cases = [
        (b"\xff" * (LIMIT + 1), 413, "payload_too_large"),
        (b"plain text", 415, "unsupported_media_type"),
        (b"", 400, "invalid_image"),
        (photo_like()[:200], 400, "invalid_image"),
    ]
    for data, status, code in cases:
        by_json = http.post("/v1/predict", json={"image": b64(data)})
        by_form = http.post("/v1/predict", files={"file": ("f", data)})
        assert (
            (by_json.status_code, by_json.json()["code"])
            == (status, code)
            == (by_form.status_code, by_form.json()["code"])
        )
        assert by_json.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "where"),
    [
        ({"json": {"image": "***"}}, 422, "validation_error", ["body", "image"]),
        ({"json": {"picture": "aGk="}}, 422, "validation_error", ["body", "image"]),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "validation_error", ["body"]),
        ({"content": b"raw bytes", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", None),
        ({"files": {"other": ("a.jpg", b"x")}}, 422, "validation_error", ["body", "file"]),
        ({"data": {"file": "a text field"}, "files": {"x": ("x", b"")}}, 422, "validation_error", ["body", "file"]),
    ],
)
def test_malformed_requests_are_problems(
    http: httpx.Client, kwargs: dict[str, Any], status: int, code: str, where: list[str] | None
) -> None:
    answer = http.post("/v1/predict", **kwargs)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert problem["code"] == code
    if where is not None:
        assert where in [e["loc"][: len(where)] for e in problem["errors"]]


def test_json_batch_obeys_the_file_count_limit(http: httpx.Client) -> None:
    tiny = b64(photo_like(16, 16, fmt="PNG"))
    answer = http.post("/v1/predict/batch", json={"images": [{"image": tiny}] * 33})  # default max is 32
    assert answer.status_code == 413
    assert answer.json()["code"] == "too_many_files"


def test_an_empty_json_batch_is_refused_like_an_empty_multipart_one(http: httpx.Client) -> None:
    answer = http.post("/v1/predict/batch", json={"images": []})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_error"
    assert ["body", "images"] in [e["loc"] for e in problem["errors"]]


class ThreadRecorder(BaseModel):
    """A body model that notes which thread validated it."""

    text: str

    @field_validator("text")
    @classmethod
    def note_thread(cls, value: str) -> str:
        VALIDATED_ON.append(threading.current_thread().name)
        return value


VALIDATED_ON: list[str] = []


async def test_large_json_bodies_are_validated_off_the_event_loop() -> None:
    """Base64 decoding of a big body would stall every other request and the probes if it ran on the loop."""

    def request_with(body: bytes) -> Request:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        return Request({"type": "http", "method": "POST", "headers": []}, receive)

    loop_thread = threading.current_thread().name
    VALIDATED_ON.clear()
    small = json.dumps({"text": "x"}).encode()
    large = json.dumps({"text": "x" * (JSON_ON_LOOP_BYTES + 1)}).encode()
    assert (await parse_json(request_with(small), ThreadRecorder)).text == "x"
    assert len((await parse_json(request_with(large), ThreadRecorder)).text) == JSON_ON_LOOP_BYTES + 1
    assert VALIDATED_ON[0] == loop_thread
    assert VALIDATED_ON[1] != loop_thread


def test_data_urls_with_parameters_and_leading_whitespace_are_read(http: httpx.Client) -> None:
    image = photo_like(seed=12)
    plain = http.post("/v1/predict", json={"image": b64(image)})
    for prefix in ("data:image/jpeg;charset=utf-8;base64,", "\n  data:image/jpeg;base64,", "DATA:IMAGE/JPEG;BASE64,"):
        answer = http.post("/v1/predict", json={"image": prefix + b64(image)})
        assert answer.status_code == 200, (prefix, answer.text)
        assert scores(answer.json()) == scores(plain.json())


def test_a_body_with_many_errors_gets_a_short_answer(http: httpx.Client) -> None:
    """Each error used to be copied into the answer twice: a 2 MB body took 33 s and 3 GB to refuse."""
    flood = http.post("/v1/predict/batch", json={"images": [0] * 100_000})  # 200 KB, an error per item before
    assert flood.status_code == 422
    assert flood.json()["code"] == "validation_error"
    assert [e["type"] for e in flood.json()["errors"]] == ["too_long"]  # the list is refused whole, at once
    assert len(flood.content) < 2_000

    unknown_keys = {f"k{i}": 1 for i in range(5000)} | {"image": b64(b"hi")}
    keys = http.post("/v1/predict", json=unknown_keys)
    assert keys.status_code == 422
    errors = keys.json()["errors"]
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert {e["type"] for e in errors[:-1]} == {"extra_forbidden"}
    assert errors[-1] == {"loc": ["body"], "msg": "and 4980 more errors, not listed", "type": "too_many_errors"}
    assert len(keys.content) < 10_000
