"""OpenAPI for routes whose body is parsed by hand: either multipart or JSON on the same path.

FastAPI documents only the bodies it parses itself, so these routes declare their alternatives with
`openapi_extra=alternative_bodies(...)`, and `install_request_schemas` adds the referenced models to
`components.schemas` (the "extending OpenAPI" pattern of FastAPI's docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from resnet_api.api.schemas import BatchJSON, BatchUpload, ImageJSON, ImageUpload

REF_TEMPLATE = "#/components/schemas/{model}"
# Every model named by `alternative_bodies` must be listed here.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (ImageUpload, BatchUpload, ImageJSON, BatchJSON)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def alternative_bodies(multipart: type[BaseModel], json: type[BaseModel], *, raw: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route taking `multipart/form-data` or `application/json`, and with `raw` the image
    file itself (see deps.request_kind).

    The raw body is documented as `application/octet-stream` only, though any `image/*` type is taken too: client
    generators (openapi-python-client) refuse a body type they cannot map to a file, and `image/*` is one.
    """
    examples = json.model_json_schema(ref_template=REF_TEMPLATE).get("examples")
    json_content: dict[str, Any] = {"schema": _ref(json)}
    if examples:
        json_content["example"] = examples[0]
    content: dict[str, Any] = {"multipart/form-data": {"schema": _ref(multipart)}, "application/json": json_content}
    if raw:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def install_request_schemas(app: FastAPI, models: Sequence[type[BaseModel]] = REQUEST_MODELS) -> None:
    """Make `app.openapi()` include `models` (and the models they nest) in `components.schemas`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, definitions = models_json_schema([(m, "validation") for m in models], ref_template=REF_TEMPLATE)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions.get("$defs", {}))
            schema["components"]["schemas"] = dict(sorted(components.items()))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
