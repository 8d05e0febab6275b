"""Prometheus metrics on a registry of their own (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_cpu_seconds_total, process_resident_memory_bytes, ... from /proc.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "resnet_api_http_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "resnet_api_http_request_duration_seconds",
            "Time from request start to response start, by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_latency = Histogram(
            "resnet_api_preprocess_seconds",
            "Decode and preprocessing time per image",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "resnet_api_queue_wait_seconds", "Time an image waited for the model", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inference_latency = Histogram(
            "resnet_api_inference_seconds", "Model forward time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "resnet_api_batch_size", "Images per forward pass", buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("resnet_api_queue_depth", "Images waiting for the model", registry=r)
        self.inflight_request_bytes = Gauge(
            "resnet_api_inflight_request_bytes",
            "Bytes of request bodies in flight, as counted against RESNET_API_MAX_INFLIGHT_REQUEST_BYTES",
            registry=r,
        )
        self.images = Counter("resnet_api_images", "Images processed, by outcome", ["outcome"], registry=r)
        self.ready = Gauge("resnet_api_ready", "1 when the model is loaded and serving", registry=r)
        self.model_info = Info("resnet_api_model", "The model being served", registry=r)
        # --- performance (issue 4) ---
        self.cache_hits = Counter("resnet_api_cache_hits", "Images answered from the result cache", registry=r)
        self.cache_misses = Counter(
            "resnet_api_cache_misses", "Images looked up in the result cache and not found", registry=r
        )
        self.cache_entries = Gauge("resnet_api_cache_entries", "Images held in the result cache", registry=r)
        self.cache_bytes = Gauge(
            "resnet_api_cache_bytes", "Bytes of model outputs held in the result cache", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
