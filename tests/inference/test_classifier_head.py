import numpy as np
import pytest

from resnet_api.inference.classifiers.head import estimate_accuracy, folds, train_head


def clusters(per_label: int, labels: int = 3, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around random centres: separable, like features of distinct classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels, dim))
    targets = np.repeat(np.arange(labels), per_label)
    features = centres[targets] + rng.normal(scale=0.8, size=(len(targets), dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), targets


def test_head_separates_held_out_examples() -> None:
    x, y = clusters(10, seed=1)
    head = train_head(x[::2], y[::2], 3)
    probs = head.probabilities(x[1::2])
    assert probs.shape == (15, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert (probs.argmax(axis=1) == y[1::2]).mean() == 1.0


def test_training_is_deterministic() -> None:
    x, y = clusters(4, seed=2)
    a, b = train_head(x, y, 3), train_head(x, y, 3)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)


def test_a_label_with_more_examples_does_not_swallow_the_others() -> None:
    x, y = clusters(20, labels=2, seed=3)
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:3]])  # 20 vs 3 examples
    head = train_head(x[keep], y[keep], 2)
    test = np.flatnonzero(y == 1)[3:]
    assert (head.probabilities(x[test]).argmax(axis=1) == 1).mean() >= 0.9


@pytest.mark.parametrize(("per_label", "method", "folds_expected"), [(5, "leave-one-out", 15), (30, "5-fold", 5)])
def test_accuracy_estimate_method_depends_on_size(per_label: int, method: str, folds_expected: int) -> None:
    x, y = clusters(per_label, seed=4)
    held_out, name = folds(y)
    assert name == method
    assert len(held_out) == folds_expected
    assert sorted(np.concatenate(held_out).tolist()) == list(range(len(y)))  # each example held out exactly once
    for test in held_out:  # stratified: every fold holds out a share of every label
        assert len(set(y[test].tolist())) == (1 if method == "leave-one-out" else 3)
    estimate = estimate_accuracy(x, y, 3, train_head(x, y, 3))
    assert estimate.method == method
    assert estimate.evaluated == len(y)
    assert estimate.accuracy == 1.0


def test_accuracy_estimate_is_honest_on_random_labels() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 512)).astype(np.float32)
    y = rng.integers(0, 3, size=30)
    estimate = estimate_accuracy(x, y, 3, train_head(x, y, 3))
    # Training accuracy would be 1.0 here; held-out accuracy stays near chance (1/3).
    assert estimate.accuracy < 0.7
