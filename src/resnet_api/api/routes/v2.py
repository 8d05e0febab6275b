"""The Open Inference Protocol (KServe V2) REST API, so Triton and KServe clients work unchanged.

Health, metadata and `infer` for the one served model, with the classification and binary tensor data
extensions. Inference goes through the same service and micro-batcher as /v1. Errors are the protocol's
`{"error": "..."}` (not problem+json), with the status codes of the one table in `api/errors.py`.
Kept out of openapi.json: the protocol has its own specification and clients, and its binary bodies
cannot be described there.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from resnet_api import __version__
from resnet_api.api.deps import ServiceDep, SettingsDep, check_size
from resnet_api.api.errors import retry_headers, status_for
from resnet_api.api.v2_codec import (
    HEADER_LENGTH,
    ProtocolError,
    decode_bytes_elements,
    decompress,
    element_count,
    encode_bytes_elements,
    numeric_tensor,
    split_body,
    take_binary,
)
from resnet_api.api.v2_schemas import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadata,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    ServerMetadata,
)
from resnet_api.inference.errors import InferenceError
from resnet_api.inference.preprocess import CROP
from resnet_api.inference.service import InferenceService, ModelOutput

MODEL_VERSION = "1"
EXTENSIONS = ["classification", "binary_tensor_data"]
IMAGE_INPUT = "image"  # BYTES [N]: encoded image files, preprocessed by the server like /v1
TENSOR_INPUT = "tensor"  # FP32 [N,3,224,224]: already preprocessed (resize 256, crop 224, ImageNet mean/std)
PROBABILITIES = "probabilities"  # FP32 [N,1000]: softmax
FEATURES = "features"  # FP32 [N,512]: pooled features, like /v1/embed without normalisation


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class V2Route(APIRoute):
    """Renders every failure of a protocol route as `{"error": "..."}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ProtocolError as exc:
                return error(exc.status, exc.message)
            except InferenceError as exc:
                status = status_for(exc)
                return error(status, exc.detail, retry_headers(request, status))
            except RequestValidationError as exc:
                return error(400, "; ".join(str(e.get("msg")) for e in exc.errors()))
            except StarletteHTTPException as exc:
                return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

        return route


router = APIRouter(prefix="/v2", tags=["open-inference-protocol"], route_class=V2Route, include_in_schema=False)


def _check_model(service: InferenceService, name: str, version: str | None) -> None:
    if name != service.description.name:
        raise ProtocolError(
            f"Request for unknown model: '{name}' is not found; this server has '{service.description.name}'", 404
        )
    if version not in (None, "", MODEL_VERSION):
        raise ProtocolError(f"Request for unknown model: '{name}' version {version} is not found", 404)


@router.get("", operation_id="v2_server_metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="resnet-api", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", operation_id="v2_live")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", operation_id="v2_ready")
async def ready(request: Request) -> Response:
    service: InferenceService | None = getattr(request.app.state, "service", None)
    # The protocol: 200 means ready, a 4xx means not, and the body is empty.
    return Response(status_code=200 if service is not None and service.is_ready else 400)


@router.get("/models/{model_name}/ready", operation_id="v2_model_ready")
@router.get("/models/{model_name}/versions/{model_version}/ready", operation_id="v2_model_version_ready")
async def model_ready(request: Request, model_name: str, model_version: str | None = None) -> Response:
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None or not service.is_ready:
        return Response(status_code=400)
    _check_model(service, model_name, model_version)
    return Response(status_code=200)


@router.get("/models/{model_name}", operation_id="v2_model_metadata")
@router.get("/models/{model_name}/versions/{model_version}", operation_id="v2_model_version_metadata")
async def model_metadata(service: ServiceDep, model_name: str, model_version: str | None = None) -> ModelMetadata:
    _check_model(service, model_name, model_version)
    d = service.description
    return ModelMetadata(
        name=d.name,
        versions=[MODEL_VERSION],
        platform="pytorch",
        inputs=[
            MetadataTensor(name=IMAGE_INPUT, datatype="BYTES", shape=[-1]),
            MetadataTensor(name=TENSOR_INPUT, datatype="FP32", shape=[-1, 3, CROP, CROP]),
        ],
        outputs=[
            MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, d.num_classes]),
            MetadataTensor(name=FEATURES, datatype="FP32", shape=[-1, d.embedding_dim]),
        ],
    )


@router.post("/models/{model_name}/infer", operation_id="v2_infer")
@router.post("/models/{model_name}/versions/{model_version}/infer", operation_id="v2_version_infer")
async def infer(
    request: Request, service: ServiceDep, settings: SettingsDep, model_name: str, model_version: str | None = None
) -> Response:
    _check_model(service, model_name, model_version)
    # 1. body -> JSON header + binary tail; 2. one input -> model outputs; 3. requested outputs -> response.
    body = decompress(await request.body(), request.headers.get("content-encoding"), settings.max_request_bytes)
    header, tail = split_body(body, request.headers.get(HEADER_LENGTH))
    try:
        infer_request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise ProtocolError(f"malformed inference request: {_summary(exc)}") from None
    sizes = [_binary_size(i.parameters) for i in infer_request.inputs]
    if len(infer_request.inputs) != 1:
        raise ProtocolError(f"send exactly one input: '{IMAGE_INPUT}' (BYTES) or '{TENSOR_INPUT}' (FP32)")
    [tensor_input], [raw] = infer_request.inputs, take_binary(tail, sizes)
    plan = _output_plan(infer_request)  # checked before the model runs
    outputs = await _run(service, settings.max_batch_files, settings.max_upload_bytes, tensor_input, raw)
    return _respond(service, infer_request, plan, outputs)


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def _binary_size(parameters: dict[str, Any]) -> int | None:
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ProtocolError("binary_data_size must be an integer")
    return size


async def _run(
    service: InferenceService, max_items: int, max_bytes: int, tensor: RequestInput, raw: bytes | None
) -> list[ModelOutput]:
    if not tensor.shape or tensor.shape[0] < 1:
        raise ProtocolError(f"input '{tensor.name}' needs a batch dimension first, got shape {tensor.shape}")
    if tensor.shape[0] > max_items:
        raise ProtocolError(
            f"{tensor.shape[0]} items sent; at most {max_items} per request (RESNET_API_MAX_BATCH_FILES)", 413
        )
    if tensor.name == IMAGE_INPUT:
        images = _image_elements(tensor, raw)
        return await service.infer_images(
            [check_size(img, f"{IMAGE_INPUT}[{i}]", max_bytes) for i, img in enumerate(images)]
        )
    if tensor.name == TENSOR_INPUT:
        expected = [tensor.shape[0], 3, CROP, CROP]
        if tensor.shape != expected:
            raise ProtocolError(f"input '{TENSOR_INPUT}' has shape {tensor.shape}; expected [N,3,{CROP},{CROP}]")
        if tensor.datatype != "FP32":
            raise ProtocolError(f"input '{TENSOR_INPUT}' must be FP32, got {tensor.datatype}")
        array = numeric_tensor(tensor.datatype, tensor.shape, tensor.data, raw)
        return await service.infer_arrays(list(array))
    raise ProtocolError(f"unexpected inference input '{tensor.name}': expected '{IMAGE_INPUT}' or '{TENSOR_INPUT}'")


def _image_elements(tensor: RequestInput, raw: bytes | None) -> list[bytes]:
    """Encoded images of a BYTES input: binary elements, or base64 strings in JSON (as KServe clients send them)."""
    if tensor.datatype != "BYTES":
        raise ProtocolError(f"input '{IMAGE_INPUT}' must be BYTES (encoded image files), got {tensor.datatype}")
    n = tensor.shape[0]
    if element_count(tensor.shape) != n:
        raise ProtocolError(f"input '{IMAGE_INPUT}' has shape {tensor.shape}; expected [N] or [N,1]")
    if raw is not None:
        images = decode_bytes_elements(raw)
    elif tensor.data is not None:
        images = [_b64(item, i) for i, item in enumerate(_flatten(tensor.data))]
    else:
        raise ProtocolError(f"input '{IMAGE_INPUT}' has neither `data` nor binary data")
    if len(images) != n:
        raise ProtocolError(f"input '{IMAGE_INPUT}' has {len(images)} elements; its shape says {n}")
    return images


def _flatten(data: list[Any]) -> list[Any]:
    return [x for item in data for x in (_flatten(item) if isinstance(item, list) else [item])]


def _b64(item: Any, index: int) -> bytes:
    if not isinstance(item, str):
        raise ProtocolError(f"'{IMAGE_INPUT}' element {index} must be a base64 string in JSON (or send binary data)")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"'{IMAGE_INPUT}' element {index} is not valid base64") from None


def _output_plan(req: InferenceRequest) -> list[tuple[str, int, bool]]:
    """(name, classification k or 0, binary?) per requested output; all outputs when none is named."""
    requested = req.outputs or [RequestOutput(name=PROBABILITIES), RequestOutput(name=FEATURES)]
    all_binary = req.parameters.get("binary_data_output") is True
    plan = []
    for out in requested:
        if out.name not in (PROBABILITIES, FEATURES):
            raise ProtocolError(f"unexpected inference output '{out.name}': expected '{PROBABILITIES}' or '{FEATURES}'")
        k = out.parameters.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ProtocolError(f"classification of output '{out.name}' must be a non-negative integer, got {k!r}")
        if k and out.name != PROBABILITIES:
            raise ProtocolError(f"classification is only offered on '{PROBABILITIES}'")
        plan.append((out.name, k, out.parameters.get("binary_data", all_binary) is True))
    return plan


def _respond(
    service: InferenceService, req: InferenceRequest, plan: list[tuple[str, int, bool]], outputs: list[ModelOutput]
) -> Response:
    tensors: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for name, k, binary in plan:
        values = _output_values(name, outputs)
        data: list[Any]
        if k:
            labels = classification_strings(values, k, service.labels)
            flat = [s for row in labels for s in row]
            tensor = ResponseOutput(name=name, datatype="BYTES", shape=[len(labels), len(labels[0])])
            payload = encode_bytes_elements([s.encode() for s in flat]) if binary else None
            data = flat
        else:
            tensor = ResponseOutput(name=name, datatype="FP32", shape=list(values.shape))
            payload = values.astype("<f4").tobytes() if binary else None
            data = values.reshape(-1).tolist()
        if payload is not None:
            tensor.parameters = {"binary_data_size": len(payload)}
            blobs.append(payload)
        else:
            tensor.data = data
        tensors.append(tensor)
    response = InferenceResponse(
        model_name=service.description.name, model_version=MODEL_VERSION, id=req.id, outputs=tensors
    )
    document = response.model_dump(exclude_none=True)
    if not blobs:
        return JSONResponse(document)
    head = json.dumps(document, separators=(",", ":")).encode()
    return Response(
        head + b"".join(blobs), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))}
    )


def _output_values(name: str, outputs: list[ModelOutput]) -> np.ndarray:
    rows = [o.probabilities if name == PROBABILITIES else o.features for o in outputs]
    return np.stack(rows).astype(np.float32)


def classification_strings(probabilities: np.ndarray, k: int, labels: list[str]) -> list[list[str]]:
    """Triton's classification extension: the top k of each row as "score:index:label", best first."""
    k = min(k, probabilities.shape[1])
    rows = []
    for row in probabilities:
        top = np.argsort(-row, kind="stable")[:k]
        rows.append([f"{row[i]:f}:{int(i)}:{labels[int(i)]}" for i in top])
    return rows
