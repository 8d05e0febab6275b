"""The real `tritonclient[http]` (NVIDIA's client, not ours) works against the running server unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from imagegen import photo_like
from resnet_api.inference.model import load_labels
from resnet_api.inference.preprocess import decode, to_array

MODEL = "resnet18"


@pytest.fixture(scope="module")
def client(interop_server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(urlparse(interop_server).netloc, network_timeout=120.0)
    yield c
    c.close()


def preprocessed(*images: bytes) -> np.ndarray:
    return np.stack([to_array(decode(img, max_pixels=10**8).image) for img in images])


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("resnet50")

    server = client.get_server_metadata()
    assert {"classification", "binary_tensor_data"} <= set(server["extensions"])
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]} == {
        ("image", "BYTES", (-1,)),
        ("tensor", "FP32", (-1, 3, 224, 224)),
    }
    assert ("probabilities", "FP32", [-1, 1000]) in [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]]


def test_infer_bytes_images_binary_and_classification(client: triton.InferenceServerClient) -> None:
    images = [photo_like(seed=31), photo_like(seed=32, fmt="PNG"), photo_like(seed=33)]
    image_input = triton.InferInput("image", [len(images)], "BYTES")
    image_input.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary by default
    result = client.infer(MODEL, [image_input], outputs=[triton.InferRequestedOutput("probabilities")], request_id="r1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 1000)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert result.get_response()["id"] == "r1"

    # The classification extension: "score:index:label", best first, like Triton.
    ranked = triton.InferRequestedOutput("probabilities", class_count=3)
    classes = client.infer(MODEL, [image_input], outputs=[ranked]).as_numpy("probabilities")
    assert classes.shape == (3, 3)
    labels = load_labels()
    for row, probs in zip(classes, probabilities, strict=True):
        parsed = [item.decode().split(":", 2) for item in row]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == list(np.argsort(-probs, kind="stable")[:3])
        assert [float(score) for score, _, _ in parsed] == pytest.approx(probs[indices].tolist(), abs=1e-6)
        assert [label for _, _, label in parsed] == [labels[i] for i in indices]


def test_infer_fp32_tensor_binary_in_and_out_matches_the_image_path(client: triton.InferenceServerClient) -> None:
    images = [photo_like(seed=41), photo_like(seed=42)]
    tensor_input = triton.InferInput("tensor", [2, 3, 224, 224], "FP32")
    tensor_input.set_data_from_numpy(preprocessed(*images), binary_data=True)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=True), triton.InferRequestedOutput("features")]
    from_tensor = client.infer(MODEL, [tensor_input], outputs=outputs)
    assert from_tensor.get_output("probabilities")["parameters"]["binary_data_size"] == 2 * 1000 * 4
    assert from_tensor.as_numpy("features").shape == (2, 512)

    image_input = triton.InferInput("image", [2, 1], "BYTES")
    image_input.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(2, 1))
    from_images = client.infer(MODEL, [image_input], outputs=outputs)
    # Same preprocessing on either side, same model: the same probabilities.
    assert np.allclose(from_tensor.as_numpy("probabilities"), from_images.as_numpy("probabilities"), atol=1e-6)


def test_infer_fp32_as_json_gives_the_binary_answer(client: triton.InferenceServerClient) -> None:
    tensor = preprocessed(photo_like(seed=51))
    as_json = triton.InferInput("tensor", [1, 3, 224, 224], "FP32").set_data_from_numpy(tensor, binary_data=False)
    as_binary = triton.InferInput("tensor", [1, 3, 224, 224], "FP32").set_data_from_numpy(tensor, binary_data=True)
    out = [triton.InferRequestedOutput("probabilities", binary_data=False)]
    json_result = client.infer(MODEL, [as_json], outputs=out)
    assert "data" in json_result.get_output("probabilities")
    binary_result = client.infer(MODEL, [as_binary])  # no outputs asked: all outputs, binary
    assert np.allclose(json_result.as_numpy("probabilities"), binary_result.as_numpy("probabilities"), atol=1e-6)


def test_errors_reach_the_client_as_protocol_errors(client: triton.InferenceServerClient) -> None:
    tensor_input = triton.InferInput("tensor", [1, 3, 224, 224], "FP32")
    tensor_input.set_data_from_numpy(np.zeros((1, 3, 224, 224), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown model") as unknown:
        client.infer("resnet50", [tensor_input])
    assert unknown.value.status() == "404"

    wrong = triton.InferInput("tensor", [1, 3, 32, 32], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"expected \[N,3,224,224\]") as shape:
        client.infer(MODEL, [wrong])
    assert shape.value.status() == "400"

    not_image = triton.InferInput("image", [1], "BYTES")
    not_image.set_data_from_numpy(np.array([b"plain text"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not a recognised image") as media:
        client.infer(MODEL, [not_image])
    assert media.value.status() == "415"
