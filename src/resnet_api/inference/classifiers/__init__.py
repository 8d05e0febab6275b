"""Few-shot custom classifiers: a small head trained on the frozen ResNet-18 features, persisted on disk."""

from resnet_api.inference.classifiers.head import AccuracyEstimate, LinearHead, estimate_accuracy, train_head
from resnet_api.inference.classifiers.registry import (
    Classifier,
    ClassifierRegistry,
    Embedder,
    Example,
    Limits,
    TrainingReport,
    registry_for,
)
from resnet_api.inference.classifiers.store import BackboneRef, ClassifierStore, Manifest, Skipped

__all__ = [
    "AccuracyEstimate",
    "BackboneRef",
    "Classifier",
    "ClassifierRegistry",
    "ClassifierStore",
    "Embedder",
    "Example",
    "Limits",
    "LinearHead",
    "Manifest",
    "Skipped",
    "TrainingReport",
    "estimate_accuracy",
    "registry_for",
    "train_head",
]
