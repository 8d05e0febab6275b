"""The model against torchvision's own numbers (../shared/reference, copied to tests/fixtures)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from resnet_api.inference.errors import WeightsUnavailable
from resnet_api.inference.model import (
    IMAGENET_WEIGHTS_FILE,
    IMAGENET_WEIGHTS_SHA256_PREFIX,
    IMAGENET_WEIGHTS_URL,
    ResNet18,
    build_model,
    load_labels,
    load_state_dict_file,
    random_weights,
    resolve_weights,
)

REFERENCE = Path(__file__).parents[1] / "fixtures" / "torchvision_resnet18.json"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


def formula_state_dict(manifest: list[list[Any]]) -> dict[str, torch.Tensor]:
    """The reference file's `weight_formula`, entry by entry."""
    state: dict[str, torch.Tensor] = {}
    for name, shape, _dtype in manifest:
        numel = int(np.prod(shape)) if shape else 1
        b = np.sin(np.arange(numel, dtype=np.float64) * 0.37 + (zlib.crc32(name.encode()) % 1000) / 100).reshape(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
            continue
        if len(shape) >= 2:
            value = b / np.sqrt(numel / shape[0])
        elif name.endswith("running_var"):
            value = 1 + 0.5 * b
        elif name.endswith("weight"):
            value = 1 + 0.1 * b
        else:
            value = 0.1 * b
        state[name] = torch.from_numpy(value.astype(np.float32))
    return state


def test_state_dict_manifest_matches_torchvision(reference: dict[str, Any]) -> None:
    ours = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in ResNet18().state_dict().items()]
    assert ours == reference["state_dict_manifest"]
    assert sum(t.numel() for t in ResNet18().parameters()) == reference["weights"]["num_params"]


def test_forward_matches_torchvision_logits_and_features(reference: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "formula.pth"
    torch.save(formula_state_dict(reference["state_dict_manifest"]), path)
    model = build_model(load_state_dict_file(path))  # the real loader, strict=True
    x = (1.5 * np.sin(0.01 * np.arange(2 * 3 * 224 * 224, dtype=np.float64))).reshape(2, 3, 224, 224)
    with torch.inference_mode():
        batch = torch.from_numpy(x.astype(np.float32))
        logits = model(batch)
        features = model.features(batch)
    np.testing.assert_allclose(logits.numpy(), np.array(reference["expected_logits"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        features[:, :16].numpy(), np.array(reference["expected_pooled_features_first_16"]), atol=1e-4, rtol=0
    )


def test_labels_are_torchvision_categories(reference: dict[str, Any]) -> None:
    assert load_labels() == reference["categories"]


def test_official_weights_identity(reference: dict[str, Any]) -> None:
    assert reference["weights"]["url"] == IMAGENET_WEIGHTS_URL
    assert reference["weights"]["file"] == IMAGENET_WEIGHTS_FILE
    assert reference["weights"]["sha256_prefix"] == IMAGENET_WEIGHTS_SHA256_PREFIX


def test_random_weights_are_seeded_and_flagged() -> None:
    a, b, c = random_weights(1), random_weights(1), random_weights(2)
    assert a.untrained
    assert a.weights_id == "random-seed1"
    assert a.sha256 == b.sha256 != c.sha256


def test_path_weights_load_with_checksum(weights_file: Path) -> None:
    loaded = resolve_weights(str(weights_file), weights_dir=None, allow_download=False, seed=0)
    assert not loaded.untrained
    assert loaded.weights_id == weights_file.name
    assert len(loaded.sha256) == 64
    build_model(loaded)  # strict load succeeds


def test_missing_imagenet_weights_name_the_fixes(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("imagenet", weights_dir=tmp_path, allow_download=False, seed=0)
    message = str(info.value)
    assert "resnet-api weights fetch" in message
    assert "RESNET_API_WEIGHTS=random" in message
    assert str(tmp_path) in message


def test_imagenet_fallback_to_random_is_explicit(tmp_path: Path) -> None:
    loaded = resolve_weights("imagenet", weights_dir=tmp_path, allow_download=False, seed=3, fallback_to_random=True)
    assert loaded.untrained
    assert loaded.weights_id == "random-seed3"


def test_imagenet_file_in_weights_dir_is_used(tmp_path: Path, weights_file: Path) -> None:
    (tmp_path / IMAGENET_WEIGHTS_FILE).write_bytes(weights_file.read_bytes())
    loaded = resolve_weights("imagenet", weights_dir=tmp_path, allow_download=False, seed=0)
    assert loaded.source == str(tmp_path / IMAGENET_WEIGHTS_FILE)
    assert not loaded.untrained


def test_loader_refuses_pickled_code(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint that would run code on load is refused, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(WeightsUnavailable, match="cannot load weights"):
        load_state_dict_file(path)


def test_loader_reports_a_non_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsUnavailable, match="does not hold a state_dict"):
        load_state_dict_file(path)


class _Payload:
    pass
