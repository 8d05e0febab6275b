"""The trainable part of a custom classifier: L2-regularised multinomial logistic regression on frozen features.

Plain functions on numpy arrays; SciPy's L-BFGS-B does the optimisation. Deterministic: zero
initialisation and a full-batch optimiser give the same head for the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-example L2 strength on the standardised features: strong enough for a handful of images per class.
DEFAULT_L2 = 1e-2
# Below this many examples the accuracy estimate is leave-one-out; above it, stratified k-fold.
LOO_MAX_EXAMPLES = 60
KFOLD = 5
_MAX_ITER = 200
_SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class LinearHead:
    """softmax(((x - mean) / scale) @ weight.T + bias) for rows x of 512-d features."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weight: np.ndarray  # (L, D)
    bias: np.ndarray  # (L,)

    @property
    def num_labels(self) -> int:
        return int(self.weight.shape[0])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, L) probabilities, rows summing to 1."""
        z = ((features.astype(np.float64) - self.mean) / self.scale) @ self.weight.T.astype(np.float64) + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probs


@dataclass(frozen=True)
class AccuracyEstimate:
    """Share of examples classified right by heads that did not see them."""

    accuracy: float
    method: str  # "leave-one-out" or "5-fold"
    evaluated: int


def train_head(
    features: np.ndarray,
    targets: np.ndarray,
    num_labels: int,
    *,
    l2: float = DEFAULT_L2,
    init: LinearHead | None = None,
) -> LinearHead:
    """Fit a head on (N, D) features and N integer targets in [0, num_labels).

    numpy + SciPy's L-BFGS-B rather than torch: torch's intra-op thread count is process-wide, and a
    second multi-threaded torch user beside the model thread would oversubscribe the CPUs it shares.
    """
    x = features.astype(np.float64)
    if init is None:
        mean = x.mean(axis=0)
        scale = np.maximum(x.std(axis=0), _SCALE_FLOOR)
    else:  # warm start (cross-validation folds): keep the full fit's standardisation
        mean, scale = init.mean.astype(np.float64), init.scale.astype(np.float64)
    xs = (x - mean) / scale
    n, dim = xs.shape
    onehot = np.zeros((n, num_labels))
    onehot[np.arange(n), targets] = 1.0
    counts = onehot.sum(axis=0)
    # Balanced class weights, so a label with more examples does not swallow the others.
    sample_weight = (n / (num_labels * np.maximum(counts, 1.0)))[targets]
    sample_weight /= sample_weight.sum()

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: num_labels * dim].reshape(num_labels, dim)
        b = theta[num_labels * dim :]
        z = xs @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -float((sample_weight * (log_p * onehot).sum(axis=1)).sum()) + 0.5 * l2 * float((w * w).sum())
        dz = sample_weight[:, None] * (np.exp(log_p) - onehot)
        grad_w = dz.T @ xs + l2 * w
        return loss, np.concatenate([grad_w.ravel(), dz.sum(axis=0)])

    theta0 = np.zeros(num_labels * (dim + 1))
    if init is not None:
        theta0 = np.concatenate([init.weight.astype(np.float64).ravel(), init.bias.astype(np.float64)])
    # Imported here, not at module import: SciPy costs ~45 MB and 0.4 s that a process never training needs.
    from scipy.optimize import minimize

    result = minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": _MAX_ITER})
    theta = result.x
    return LinearHead(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weight=theta[: num_labels * dim].reshape(num_labels, dim).astype(np.float32),
        bias=theta[num_labels * dim :].astype(np.float32),
    )


def folds(targets: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Held-out index sets: one per example up to LOO_MAX_EXAMPLES, else stratified round-robin k-fold."""
    n = len(targets)
    if n <= LOO_MAX_EXAMPLES:
        return [np.array([i]) for i in range(n)], "leave-one-out"
    assignment = np.empty(n, dtype=np.int64)
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        assignment[members] = np.arange(len(members)) % KFOLD
    return [np.flatnonzero(assignment == k) for k in range(KFOLD)], f"{KFOLD}-fold"


def estimate_accuracy(
    features: np.ndarray, targets: np.ndarray, num_labels: int, full: LinearHead, *, l2: float = DEFAULT_L2
) -> AccuracyEstimate:
    """Cross-validated accuracy; each fold warm-starts from the full fit, so it costs a few LBFGS steps."""
    held_out, method = folds(targets)
    right = 0
    for test in held_out:
        train = np.setdiff1d(np.arange(len(targets)), test)
        head = train_head(features[train], targets[train], num_labels, l2=l2, init=full)
        right += int((head.probabilities(features[test]).argmax(axis=1) == targets[test]).sum())
    return AccuracyEstimate(accuracy=right / len(targets), method=method, evaluated=len(targets))
