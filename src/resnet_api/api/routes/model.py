"""What is being served: model identity and labels."""

from __future__ import annotations

from fastapi import APIRouter

from resnet_api.api.deps import ServiceDep
from resnet_api.api.errors import error_responses
from resnet_api.api.schemas import BatchingInfo, LabelsResponse, ModelInfo, ThreadsInfo
from resnet_api.api.views import warning
from resnet_api.inference.service import batch_size_cap, parallel_batches

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/model",
    operation_id="get_model",
    summary="The model, weights, backend and serving settings",
    response_model=ModelInfo,
    responses=error_responses(401, 503),
)
async def get_model(service: ServiceDep) -> ModelInfo:
    d, s = service.description, service.settings
    return ModelInfo(
        name=d.name,
        weights=d.weights,
        weights_sha256=d.weights_sha256,
        untrained=d.untrained,
        backend=d.backend,
        runtime=d.runtime,
        precision=d.precision,
        num_classes=d.num_classes,
        embedding_dim=d.embedding_dim,
        threads=ThreadsInfo(
            torch_intra_op=s.torch_threads, torch_inter_op=s.torch_interop_threads, decode_workers=s.decode_workers
        ),
        batching=BatchingInfo(
            max_batch_size=s.max_batch_size,
            parallel_batches=parallel_batches(s),
            images_per_batch=batch_size_cap(s),
            max_batch_wait_ms=s.max_batch_wait_ms,
            max_queue_size=s.max_queue_size,
        ),
        version=d.version,
        warning=warning(service),
    )


@router.get(
    "/labels",
    operation_id="get_labels",
    summary="The class names, in index order",
    response_model=LabelsResponse,
    responses=error_responses(401, 503),
)
async def get_labels(service: ServiceDep) -> LabelsResponse:
    return LabelsResponse(count=len(service.labels), labels=service.labels)
