"""Every knob of the service, read from `RESNET_API_*` environment variables.

The README's settings table mirrors the field docstrings here; `tests/test_settings.py` keeps them in sync.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.5)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


KEY_CHARACTERS = "API keys are printable ASCII without spaces (HTTP headers carry no other text reliably)"


def _key_problem(keys: list[str]) -> str | None:
    """What is wrong with these API keys, if anything: the same rules for the variable and the key file.

    Printable ASCII only: a key every client sends as the same bytes (a non-ASCII one matched only when sent
    as latin-1).
    """
    if any(len(key) < 16 for key in keys):
        return "every API key needs at least 16 characters"
    if not all(key.isascii() and key.isprintable() and " " not in key for key in keys):
        return KEY_CHARACTERS
    return None


class SettingsError(ValueError):
    """A setting whose value parses but cannot serve, found when it is used (e.g. the API key file's contents)."""


class Settings(BaseSettings):
    """Service configuration; each field is `RESNET_API_<NAME>` in the environment."""

    # env_ignore_empty: `RESNET_API_DATA_DIR=` (compose's `${VAR:-}`) means the default, not the working directory.
    model_config = SettingsConfigDict(
        env_prefix="RESNET_API_", extra="ignore", frozen=True, use_attribute_docstrings=True, env_ignore_empty=True
    )

    host: str = Field(default="127.0.0.1", min_length=1)
    """Interface `resnet-api serve` binds to (use 0.0.0.0 in a container)."""

    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port `resnet-api serve` listens on."""

    weights: str = Field(default="imagenet", min_length=1)
    """`imagenet` (official file from the weights dir, strict), a path to a state_dict file, or `random` (untrained, for demos and tests)."""

    weights_dir: Path | None = None
    """Directory holding `resnet18-f37072fd.pth`; default is torch.hub's checkpoints dir (`$TORCH_HOME/hub/checkpoints`)."""

    allow_download: bool = True
    """When `weights=imagenet` and the file is missing, try downloading it (hash checked) before failing."""

    weights_url: str = Field(default="https://download.pytorch.org/models/resnet18-f37072fd.pth", min_length=1)
    """Where `weights fetch` downloads the official file from (an internal mirror works; the SHA-256 prefix is still checked)."""

    fallback_to_random: bool = False
    """If the `imagenet` weights cannot be had, start on untrained weights with loud warnings instead of failing."""

    random_seed: int = Field(default=0, ge=0)
    """Seed of the untrained weights used by `weights=random`."""

    torch_threads: int = Field(default_factory=available_cpus, ge=1, le=256)
    """torch intra-op threads; default is the CPUs this process may use (affinity and cgroup quota)."""

    torch_interop_threads: int = Field(default=1, ge=1, le=64)
    """torch inter-op threads (each batch is one chain of operators, so 1 is enough)."""

    parallel_batches: int = Field(default=0, ge=0, le=64)
    """`torch` backend: batches run at once, each on its own model thread with TORCH_THREADS split between them (0 = auto: 2 when TORCH_THREADS >= 2); a lone batch still gets every thread."""

    decode_workers: int = Field(default_factory=available_cpus, ge=1, le=256)
    """Threads decoding and preprocessing images, off the event loop."""

    max_batch_size: int = Field(default=8, ge=1, le=256)
    """Most images in the model at once: one batch, or split between PARALLEL_BATCHES (torch: 2 batches of 4), at least 1 each."""

    max_batch_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    """Longest a batch waits for more images once it has one (0 = never wait)."""

    max_queue_size: int = Field(default=128, ge=1, le=100_000)
    """Images admitted at once (decoding, queued or running); beyond this requests get 503 with Retry-After at once."""

    retry_after_seconds: int = Field(default=1, ge=1, le=3600)
    """Value of the Retry-After header on 503 answers."""

    max_upload_bytes: int = Field(default=20 * MiB, ge=1024, le=1024 * MiB)
    """Largest accepted image file; bigger ones get 413."""

    max_request_bytes: int = Field(default=100 * MiB, ge=1024, le=8 * 1024 * MiB)
    """Largest accepted request body (all files of a batch together), enforced while it streams in."""

    max_inflight_request_bytes: int = Field(default=512 * MiB, ge=1024, le=64 * 1024 * MiB)
    """Bytes of request bodies held by all requests at once (JSON counts 3x: raw, text, decoded); past it a request gets 503 with Retry-After before its body is read; a request alone always runs."""

    max_image_pixels: int = Field(default=50_000_000, ge=1, le=1_000_000_000)
    """Decompression-bomb guard: images with more pixels get 413."""

    max_batch_files: int = Field(default=32, ge=1, le=1024)
    """Most files in one `/v1/predict/batch` request."""

    warmup: bool = True
    """Run the model at every batch size it is first slower at, and decode an image, at start-up, so the first request is not slow."""

    log_level: str = Field(default="info", pattern="^(critical|error|warning|info|debug)$")
    """Log level of the service and of uvicorn."""

    # --- reliability and security (issue 5) ---
    request_deadline_ms: float = Field(default=10_000.0, ge=10.0, le=600_000.0)
    """An image not sent to the model within this time of its arrival is answered 503 and dropped."""

    body_timeout_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)
    """Most time a client may take to send a request body; slower uploads get 408."""

    keep_alive_timeout_seconds: int = Field(default=5, ge=1, le=600)
    """Idle keep-alive connections are closed after this long."""

    max_form_fields: int = Field(default=8, ge=0, le=1000)
    """Most non-file fields in one multipart request (more get 400 `invalid_form`); training requests also get one `labels` field per image they may send."""

    max_form_part_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * MiB)
    """Largest non-file multipart field (larger ones get 400 `invalid_form`)."""

    shutdown_drain_seconds: float = Field(default=0.0, ge=0.0, le=300.0)
    """After SIGTERM, keep the listener open this long answering 503 (readiness failed) before closing it."""

    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    """After SIGTERM (and the drain), longest wait for accepted requests to finish before they are cancelled."""

    api_keys: Annotated[tuple[SecretStr, ...] | None, NoDecode] = None
    """Comma-separated API keys (16+ printable ASCII characters each); when set, `/v1/*` and `/v2/*` need one as `Authorization: Bearer` or `X-API-Key`."""

    api_keys_file: Path | None = None
    """File with more API keys, one per line (`#` comments allowed): a Docker or Kubernetes secret."""

    protect_probes: bool = False
    """With API keys set, also require a key for `/livez`, `/readyz`, `/metrics` and `/v2/health/*`."""

    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated origins allowed by CORS (`*` for any); empty means no CORS headers at all."""

    access_log: bool = True
    """Write one JSON line per request (with its request id) to the `resnet_api.access` logger."""

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any, info: ValidationInfo) -> Any:
        """`a,b` or a JSON list `["a", "b"]` (what an unset variable in docker-compose.yml renders as: `[]`)."""
        if isinstance(value, str):
            if value.strip().startswith("["):
                return tuple(json.loads(value))
            parts = tuple(part.strip() for part in value.split(",") if part.strip())
            if not parts and info.field_name == "api_keys":  # "," asks for keys and names none: not "no auth"
                raise ValueError("no API key given: set at least one, or leave RESNET_API_API_KEYS unset")
            return parts
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_usable(cls, value: tuple[SecretStr, ...] | None) -> tuple[SecretStr, ...] | None:
        problem = None if value is None else _key_problem([key.get_secret_value() for key in value])
        if problem:
            raise ValueError(problem)
        return value

    def all_api_keys(self) -> list[str]:
        """The keys from `api_keys` and `api_keys_file` together (read now: call once, at start-up).

        Raises `SettingsError` for a key file that cannot serve: unreadable as UTF-8, a key too short, or no key
        at all (an empty or comment-only file would otherwise turn authentication off without a word).
        """
        keys = [key.get_secret_value() for key in self.api_keys or ()]
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise SettingsError(f"{self.api_keys_file}: not UTF-8 text ({exc.reason})") from None
            in_file = [key for key in (line.split("#", 1)[0].strip() for line in lines) if key]
            problem = _key_problem(in_file)
            if problem:
                raise SettingsError(f"{self.api_keys_file}: {problem}")
            if not in_file:
                raise SettingsError(
                    f"{self.api_keys_file}: no API key in the file (every line is empty or a comment); "
                    "add keys, or leave RESNET_API_API_KEYS_FILE unset to serve without"
                )
            keys += in_file
        return keys

    # --- custom classifiers (issue 8) ---

    data_dir: Path | None = None
    """Directory where custom classifiers are stored (`<data_dir>/classifiers/`); default `$XDG_DATA_HOME/resnet-api` or `~/.local/share/resnet-api`."""

    max_classifiers: int = Field(default=50, ge=1, le=10_000)
    """Most custom classifiers the service holds; creating one more gets 422."""

    max_classifier_labels: int = Field(default=20, ge=2, le=1000)
    """Most labels one custom classifier may have."""

    max_classifier_images: int = Field(default=200, ge=2, le=5000)
    """Most example images in one create or add-examples request (413 beyond)."""

    max_classifier_examples: int = Field(default=1000, ge=2, le=100_000)
    """Most examples one custom classifier may accumulate over all its requests."""

    classifier_embed_inflight: int = Field(default=2, ge=1, le=256)
    """Training images in the model queue at once (all trainings together): bounds how long training delays predictions."""

    # --- performance (issue 4) ---
    backend: Literal["torch", "onnxruntime", "openvino", "int8"] = "torch"
    """Model runtime: `torch` (reference), `onnxruntime`, `openvino` or `int8` (ONNX Runtime static int8)."""

    torch_fold_bn: bool = True
    """`torch` backend: fold batch norm into the convolutions (faster, within 1e-6 of the unfolded model)."""

    openvino_precision: Literal["fp32", "bf16"] = "fp32"
    """`openvino` backend: inference precision; `bf16` runs only on CPUs that support it (else fp32)."""

    model_cache_dir: Path | None = None
    """Where exported ONNX and int8 files are cached; default beside the weights file, else ~/.cache/resnet-api."""

    calibration_dir: Path | None = None
    """`int8` backend: folder of images to calibrate on (use a few hundred of your own photos); default a generated set."""

    calibration_images: int = Field(default=32, ge=1, le=10_000)
    """`int8` backend: most calibration images used."""

    int8_runtime: Literal["onnxruntime", "openvino"] = "onnxruntime"
    """`int8` backend: what runs the quantized graph, ONNX Runtime or OpenVINO (the same int8 file either way)."""

    jpeg_draft: bool = True
    """Decode large JPEGs at a reduced DCT scale (shorter side still >= 256 px): several times faster."""

    adaptive_batch_wait: bool = True
    """Wait for more images only while other requests are still being decoded (no wait when none are)."""

    malloc_arenas: int = Field(default=2, ge=0, le=1024)
    """glibc malloc arenas shared by all threads (0 = glibc's default, 8 per core): fewer keep less freed memory."""

    release_memory: bool = True
    """Give memory back to the OS: freed heap after start-up and when idle, and library code run only at start-up."""

    idle_release_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    """With RELEASE_MEMORY on, return freed memory once no image has arrived for this long (0 = after start-up only); with WARMUP on, one image's decode and forward then page back what the next request uses."""

    cache_max_entries: int = Field(default=0, ge=0, le=10_000_000)
    """Result cache size in images (0 = off); keyed by the SHA-256 of the bytes, model, backend and options."""

    cache_max_bytes: int = Field(default=64 * MiB, ge=0, le=64 * 1024 * MiB)
    """Result cache bound in bytes of stored outputs (about 6 KB per image)."""
