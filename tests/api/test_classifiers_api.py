"""Custom classifiers through HTTP, on the real (untrained, seeded) ResNet-18 features."""

import asyncio
import base64
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from classifier_images import colour_image, training_set
from resnet_api.app import create_app
from resnet_api.settings import Settings

HELD_OUT = [(label, colour_image(label, 50_000 + i)) for label in ("red", "green", "blue") for i in range(2)]


@pytest.fixture
def fs_settings(weights_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        weights=str(weights_file),
        allow_download=False,
        data_dir=tmp_path / "data",
        max_batch_size=8,
        max_batch_wait_ms=2.0,
        warmup=False,
        max_classifiers=4,
        max_classifier_images=30,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client,
    ):
        yield client


def multipart(pairs: list[tuple[str, bytes]], name: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {"labels": [label for label, _ in pairs]}
    if name is not None:
        data["name"] = name
    files = [("files", (f"{label}-{i}.png", image, "image/png")) for i, (label, image) in enumerate(pairs)]
    return {"data": data, "files": files}


async def create(client: httpx.AsyncClient, name: str = "colours", per_label: int = 3, seed: int = 0) -> dict:
    response = await client.post("/v1/classifiers", **multipart(training_set(per_label, seed=seed), name))
    assert response.status_code == 201, response.text
    return response.json()


async def predict(client: httpx.AsyncClient, classifier_id: str, image: bytes) -> httpx.Response:
    return await client.post(
        "/v1/predict", params={"classifier": classifier_id, "top_k": 3}, files={"file": ("x.png", image, "image/png")}
    )


async def test_create_then_classify_held_out_images_and_survive_a_restart(fs_settings: Settings) -> None:
    async with running(fs_settings) as client:
        body = await create(client)
        assert body["name"] == "colours"
        assert [(entry["label"], entry["examples"]) for entry in body["labels"]] == [
            ("red", 3),
            ("green", 3),
            ("blue", 3),
        ]
        assert body["accuracy"] == {"accuracy": 1.0, "method": "leave-one-out", "evaluated": 9}
        assert body["compatible"] is True
        assert body["training"]["images"] == 9
        assert len(body["backbone"]["weights_sha256"]) == 64

        answers = []
        for label, image in HELD_OUT:
            response = await predict(client, body["id"], image)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["classifier"] == body["id"]
            assert {p["label"] for p in answer["predictions"]} == {"red", "green", "blue"}
            assert answer["predictions"][0]["label"] == label
            answers.append(answer["predictions"])

        batch = await client.post(
            "/v1/predict/batch",
            params={"classifier": body["id"]},
            files=[("files", (f"{i}.png", image, "image/png")) for i, (_, image) in enumerate(HELD_OUT)],
        )
        assert batch.status_code == 200
        assert [r["predictions"][0]["label"] for r in batch.json()["results"]] == [label for label, _ in HELD_OUT]
        assert batch.json()["classifier"] == body["id"]

        imagenet = await client.post("/v1/predict", files={"file": ("x.png", HELD_OUT[0][1], "image/png")})
        assert imagenet.json()["classifier"] is None
        assert imagenet.json()["predictions"][0]["label"] not in {"red", "green", "blue"}

    async with running(fs_settings) as client:  # a new app on the same data directory
        listed = (await client.get("/v1/classifiers")).json()
        assert [c["id"] for c in listed["classifiers"]] == [body["id"]]
        assert listed["skipped"] == []
        again = (await client.get(f"/v1/classifiers/{body['id']}")).json()
        assert again["accuracy"] == body["accuracy"]
        assert again["created_at"] == body["created_at"]
        for (_, image), before in zip(HELD_OUT, answers, strict=True):
            after = (await predict(client, body["id"], image)).json()["predictions"]
            assert [p["label"] for p in after] == [p["label"] for p in before]
            assert [p["score"] for p in after] == pytest.approx([p["score"] for p in before], abs=1e-5)


async def test_add_examples_delete_and_errors(fs_settings: Settings) -> None:
    async with running(fs_settings) as client:
        body = await create(client, per_label=2)
        more = [("red", colour_image("red", 70_000)), ("yellow", colour_image("red", 70_001))]
        response = await client.post(f"/v1/classifiers/{body['id']}/examples", **multipart(more))
        assert response.status_code == 200, response.text
        updated = response.json()
        assert [(e["label"], e["examples"]) for e in updated["labels"]][-1] == ("yellow", 1)
        assert updated["revision"] == 2
        assert updated["examples"] == 8

        one_label = await client.post("/v1/classifiers", **multipart(training_set(2, labels=("red",)), "x"))
        assert one_label.status_code == 422
        assert one_label.json()["code"] == "invalid_training_set"
        assert one_label.headers["content-type"] == "application/problem+json"

        mismatched = await client.post(
            "/v1/classifiers",
            data={"name": "x", "labels": ["red"]},
            files=[("files", ("a.png", colour_image("red", 1), "image/png"))] * 2,
        )
        assert mismatched.status_code == 422
        assert "2 files but 1 labels" in mismatched.json()["detail"]

        too_many = await client.post("/v1/classifiers", **multipart(training_set(11), "x"))
        assert too_many.status_code == 413
        assert too_many.json()["code"] == "too_many_files"
        assert "RESNET_API_MAX_CLASSIFIER_IMAGES" in too_many.json()["detail"]

        not_image = await client.post(
            "/v1/classifiers",
            data={"name": "x", "labels": ["red", "blue"]},
            files=[
                ("files", ("a.png", colour_image("red", 1), "image/png")),
                ("files", ("b.txt", b"hello", "text/plain")),
            ],
        )
        assert not_image.status_code == 415
        assert "b.txt (label 'blue')" in not_image.json()["detail"]

        assert (await client.delete(f"/v1/classifiers/{body['id']}")).status_code == 204
        missing = await predict(client, body["id"], HELD_OUT[0][1])
        assert missing.status_code == 404
        assert missing.json()["code"] == "classifier_not_found"
        assert (await client.get(f"/v1/classifiers/{body['id']}")).status_code == 404
        assert (await client.delete(f"/v1/classifiers/{body['id']}")).status_code == 404
        batch = await client.post(
            "/v1/predict/batch",
            params={"classifier": "nope"},
            files=[("files", ("a.png", HELD_OUT[0][1], "image/png"))],
        )
        assert batch.status_code == 404
        assert (await client.get("/v1/classifiers")).json()["classifiers"] == []


async def test_concurrent_creates_and_predictions(fs_settings: Settings) -> None:
    async with running(fs_settings) as client:
        first = await create(client, name="first", per_label=2)
        creates = [client.post("/v1/classifiers", **multipart(training_set(2, seed=s), f"c{s}")) for s in range(1, 6)]
        predictions = [predict(client, first["id"], image) for _, image in HELD_OUT]
        imagenet = [client.post("/v1/predict", files={"file": ("x.png", image, "image/png")}) for _, image in HELD_OUT]
        responses = await asyncio.gather(*creates, *predictions, *imagenet)
        created, rest = responses[:5], responses[5:]
        assert sorted(r.status_code for r in created) == [201, 201, 201, 422, 422]  # 4 classifiers at most
        assert all(r.status_code == 200 for r in rest)
        assert [r.json()["predictions"][0]["label"] for r in rest[: len(HELD_OUT)]] == [label for label, _ in HELD_OUT]
        listed = (await client.get("/v1/classifiers")).json()["classifiers"]
        assert len(listed) == 4
        assert len(list((fs_settings.data_dir / "classifiers").iterdir())) == 4


async def test_corrupt_file_is_reported_and_the_rest_still_loads(
    fs_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(fs_settings) as client:
        good = await create(client, name="good", per_label=2)
        bad = await create(client, name="bad", per_label=2, seed=1)
    root = fs_settings.data_dir / "classifiers"
    head = next((root / bad["id"]).glob("head-*.npz"))
    head.write_bytes(head.read_bytes()[:100])  # a partial write
    (root / "stray").mkdir()

    with caplog.at_level(logging.WARNING):
        async with running(fs_settings) as client:
            listed = (await client.get("/v1/classifiers")).json()
            assert [c["id"] for c in listed["classifiers"]] == [good["id"]]
            reasons = {Path(s["path"]).name: s["reason"] for s in listed["skipped"]}
            assert set(reasons) == {bad["id"], "stray"}
            assert "sha256" in reasons[bad["id"]]
            assert (await predict(client, good["id"], HELD_OUT[0][1])).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
    assert f"skipping stored classifier {root / bad['id']}" in caplog.text


async def test_classifier_refuses_to_run_on_other_weights(fs_settings: Settings) -> None:
    async with running(fs_settings) as client:
        body = await create(client, per_label=2)
    other = fs_settings.model_copy(update={"weights": "random", "random_seed": 7})
    async with running(other) as client:
        listed = (await client.get("/v1/classifiers")).json()["classifiers"]
        assert [(c["id"], c["compatible"]) for c in listed] == [(body["id"], False)]
        response = await predict(client, body["id"], HELD_OUT[0][1])
        assert response.status_code == 409
        assert response.json()["code"] == "backbone_mismatch"
        assert "restart with those weights" in response.json()["detail"]
        more = await client.post(f"/v1/classifiers/{body['id']}/examples", **multipart(training_set(1)))
        assert more.status_code == 409
        assert (await client.delete(f"/v1/classifiers/{body['id']}")).status_code == 204


async def test_json_bodies_with_base64_images_grouped_by_label(fs_settings: Settings) -> None:
    def group(label: str, seeds: range) -> dict[str, object]:
        images = [{"image": base64.b64encode(colour_image(label, s)).decode(), "filename": f"{s}.png"} for s in seeds]
        return {"label": label, "images": images}

    async with running(fs_settings) as client:
        body = {"name": "json", "labels": [group("red", range(3)), group("blue", range(100, 103))]}
        created = await client.post("/v1/classifiers", params={"l2": 0.5}, json=body)
        assert created.status_code == 201, created.text
        info = created.json()
        assert info["l2"] == 0.5
        assert [(e["label"], e["examples"]) for e in info["labels"]] == [("red", 3), ("blue", 3)]
        assert created.headers["location"] == f"/v1/classifiers/{info['id']}"

        more = await client.post(
            f"/v1/classifiers/{info['id']}/examples", json={"labels": [group("green", range(200, 203))]}
        )
        assert more.status_code == 200, more.text
        assert [e["label"] for e in more.json()["labels"]] == ["red", "blue", "green"]
        assert more.json()["l2"] == 0.5  # a retrain keeps the classifier's regularisation
        image = base64.b64encode(colour_image("green", 60_000)).decode()
        answer = await client.post("/v1/predict", params={"classifier": info["id"]}, json={"image": image})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == "green"

        bad = await client.post("/v1/classifiers", json={"name": "x", "labels": [{"label": "a", "images": []}]})
        assert bad.status_code == 422
        assert bad.json()["code"] == "validation_error"
        no_name = await client.post("/v1/classifiers", **multipart(training_set(1)))
        assert no_name.status_code == 422
        assert no_name.json()["errors"][0]["loc"] == ["body", "name"]


async def test_training_forms_are_parsed_under_the_form_limits(fs_settings: Settings) -> None:
    """The multipart parser's limits hold here as on the prediction routes: text fields (one `labels` per allowed
    file, plus RESNET_API_MAX_FORM_FIELDS), their size (RESNET_API_MAX_FORM_PART_BYTES) and the file count."""
    async with running(fs_settings) as client:
        fields_allowed = fs_settings.max_form_fields + fs_settings.max_classifier_images
        body = multipart(training_set(2), "x")
        body["data"]["note"] = ["x"] * fields_allowed  # type: ignore[index]
        too_many_fields = await client.post("/v1/classifiers", **body)
        assert too_many_fields.status_code == 400, too_many_fields.text
        assert too_many_fields.json()["code"] == "invalid_form"

        huge_name = await client.post("/v1/classifiers", **multipart(training_set(2), "x" * 70_000))
        assert huge_name.status_code == 400
        assert huge_name.json()["code"] == "invalid_form"

        files = [("files", ("a.png", colour_image("red", 1), "image/png"))] * (fs_settings.max_classifier_images + 1)
        too_many_files = await client.post("/v1/classifiers", data={"name": "x", "labels": ["red"]}, files=files)
        assert too_many_files.status_code == 413
        problem = too_many_files.json()
        assert problem["code"] == "too_many_files"
        assert f"more than {fs_settings.max_classifier_images} images sent" in problem["detail"]

        # Within the limits, a training set with more labels than RESNET_API_MAX_FORM_FIELDS alone allows.
        many_labels = multipart(training_set(4), "colours")
        assert len(many_labels["data"]["labels"]) > fs_settings.max_form_fields  # type: ignore[index]
        assert (await client.post("/v1/classifiers", **many_labels)).status_code == 201
        assert (await client.get("/livez")).status_code == 200


async def test_a_drain_refuses_new_requests_but_lets_a_training_already_accepted_finish(
    fs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during a training: its examples are embedded a few at a time, the later ones after the drain."""
    from resnet_api.app import begin_draining
    from resnet_api.inference.backends.torch_backend import TorchBackend

    real_run = TorchBackend.run
    started = threading.Event()

    def slow_run(self: TorchBackend, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        started.set()
        time.sleep(0.05)  # the training is still embedding when the drain begins
        return real_run(self, batch, threads)

    settings = fs_settings.model_copy(update={"max_batch_size": 1})
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client,
    ):
        monkeypatch.setattr(TorchBackend, "run", slow_run)
        training = asyncio.create_task(client.post("/v1/classifiers", **multipart(training_set(4), "late")))
        async with asyncio.timeout(30):
            while not started.is_set():
                await asyncio.sleep(0.005)
        begin_draining(app)  # what the SIGTERM handler does
        ready = await client.get("/readyz")
        refused = await client.post("/v1/predict", files={"file": ("a.png", colour_image("red", 7), "image/png")})
        new_training = await client.post("/v1/classifiers", **multipart(training_set(2, seed=3), "new"))
        accepted = await training
    assert (ready.status_code, refused.status_code, new_training.status_code) == (503, 503, 503)
    assert refused.json()["code"] == new_training.json()["code"] == "not_ready"
    assert "shutting down" in refused.json()["detail"]
    assert accepted.status_code == 201, accepted.text  # was 503 not_ready: its later examples were refused
    assert accepted.json()["examples"] == 12
