"""Domain errors: no HTTP here. `api/errors.py` maps each class to a status code in one table."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error the service reports to a caller; `code` is a stable machine-readable name."""

    code = "inference_error"
    title = "Inference failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidImage(InferenceError):
    """Recognised as an image but corrupt or truncated."""

    code = "invalid_image"
    title = "Invalid image"


class UnsupportedImage(InferenceError):
    """Not an image, or a format the service does not accept."""

    code = "unsupported_media_type"
    title = "Unsupported image type"


class ImageTooLarge(InferenceError):
    """More pixels than the decompression-bomb limit."""

    code = "image_too_large"
    title = "Image too large"


class PayloadTooLarge(InferenceError):
    """More bytes than the upload or request limit."""

    code = "payload_too_large"
    title = "Payload too large"


class Overloaded(InferenceError):
    """The queue is full: retry later."""

    code = "overloaded"
    title = "Service overloaded"


class NotReady(InferenceError):
    """The model is not loaded yet, or the service is shutting down."""

    code = "not_ready"
    title = "Service not ready"


class WeightsUnavailable(InferenceError):
    """The configured weights cannot be loaded; the message names the fixes."""

    code = "weights_unavailable"
    title = "Weights unavailable"


class TooManyFiles(PayloadTooLarge):
    """More files in one request than allowed."""

    code = "too_many_files"
    title = "Too many files"


class DeadlineExceeded(Overloaded):
    """The image waited longer than the request deadline and was dropped before inference."""

    code = "deadline_exceeded"
    title = "Deadline exceeded"


class ClientDisconnected(InferenceError):
    """The client went away before its answer was ready; its work was skipped."""

    code = "client_closed_request"
    title = "Client closed request"


class InvalidTensor(InferenceError):
    """A preprocessed input tensor with the wrong shape, type or values."""

    code = "invalid_tensor"
    title = "Invalid tensor"


# --- custom classifiers (issue 8) ---


class ClassifierNotFound(InferenceError):
    """No custom classifier with this id."""

    code = "classifier_not_found"
    title = "Classifier not found"


class BackboneMismatch(InferenceError):
    """The classifier was trained on other backbone weights than the ones this service runs."""

    code = "backbone_mismatch"
    title = "Classifier trained on other weights"


class LimitExceeded(InferenceError):
    """Too many classifiers, labels or examples for the configured limits."""

    code = "limit_exceeded"
    title = "Limit exceeded"


class InvalidTrainingSet(InferenceError):
    """The examples cannot train a classifier (fewer than two labels, an empty label, a bad name...)."""

    code = "invalid_training_set"
    title = "Invalid training set"


class ClassifierChanged(InferenceError):
    """Another process sharing the data directory (a replica) changed or deleted the classifier since this one
    read it: the write is refused rather than losing that change."""

    code = "classifier_changed"
    title = "Classifier changed by another replica"


class StorageFailed(InferenceError):
    """The classifier's files could not be written (data directory missing, read-only or full)."""

    code = "storage_failed"
    title = "Storage failed"
