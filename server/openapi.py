"""GET /swagger.json: the routes, and the /score model's inputs and outputs.

``?version=2`` (the default, as AzureML) gives Swagger 2.0, ``?version=3`` OpenAPI 3.0.
An entry script's own schema (``ModelMetadata.swagger``, from inference-schema) wins for
/score when it has one.
"""

from __future__ import annotations

from typing import Any

_ITEM_TYPES = {"BOOL": {"type": "boolean"}, "BYTES": {"type": "string"}}


def _item(datatype: str) -> dict[str, Any]:
    if datatype in _ITEM_TYPES:
        return dict(_ITEM_TYPES[datatype])
    if datatype.startswith(("INT", "UINT")):
        return {"type": "integer", "format": "int64" if datatype.endswith("64") else "int32"}
    return {"type": "number", "format": "double" if datatype == "FP64" else "float"}


def _tensor_schema(spec: Any) -> dict[str, Any]:
    """Nested arrays, one level per dimension, with the dims in the description."""
    schema = _item(spec.datatype)
    for dim in reversed(spec.shape or (-1,)):
        schema = {"type": "array", "items": schema}
        if dim >= 0:
            schema["minItems"] = schema["maxItems"] = dim
    schema["description"] = f"{spec.datatype} tensor of shape {list(spec.shape)} (-1: any)"
    return schema


def _score_schemas(md: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if md is None:
        anything: dict[str, Any] = {"type": "object"}
        return anything, anything
    if md.swagger:  # inference-schema decorated run(): its own schemas
        inp = md.swagger.get("ServiceInput")
        out = md.swagger.get("ServiceOutput")
        if inp and out:
            return inp, out
    if md.entry_script:  # run(raw_data): anything the script accepts
        anything = {"type": "object"}
        return anything, anything
    request = {
        "type": "object",
        "properties": {spec.name: _tensor_schema(spec) for spec in md.inputs},
        "required": [spec.name for spec in md.inputs],
    }
    if len(md.inputs) == 1:
        request["description"] = 'or {"data": ...} for the only input'
    if len(md.outputs) == 1:
        response = _tensor_schema(md.outputs[0])
    else:
        response = {
            "type": "object",
            "properties": {spec.name: _tensor_schema(spec) for spec in md.outputs},
        }
    return request, response


def document(md: Any, version: int, server_version: str) -> dict[str, Any]:
    request, response = _score_schemas(md)
    title = f"infergate: {md.id.name} v{md.id.version}" if md is not None else "infergate"
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    v2_error = {"type": "object", "properties": {"error": {"type": "string"}}}
    ops: dict[str, dict[str, Any]] = {
        "/": {"get": _op("Liveness (AzureML)", None, {"type": "string"}, version)},
        "/score": {
            "post": _op("Score (AzureML)", request, response, version, error),
            "get": _op("Score with query values (AzureML)", None, response, version, error),
        },
        "/swagger.json": {"get": _op("This document", None, {"type": "object"}, version)},
        "/metrics": {"get": _op("Prometheus metrics", None, {"type": "string"}, version)},
        "/v2/health/live": {"get": _op("Liveness", None, None, version)},
        "/v2/health/ready": {"get": _op("Readiness", None, None, version, v2_error)},
        "/v2": {"get": _op("Server metadata", None, {"type": "object"}, version)},
        "/v2/models/{model}": {"get": _op("Model metadata", None, {"type": "object"}, version, v2_error)},
        "/v2/models/{model}/ready": {"get": _op("Model readiness", None, None, version, v2_error)},
        "/v2/models/{model}/infer": {
            "post": _op("Inference (Open Inference Protocol v2)", {"type": "object"}, {"type": "object"}, version, v2_error)
        },
        "/v2/repository/index": {"post": _op("Repository index", None, {"type": "array"}, version)},
        "/v2/repository/models/{model}/load": {"post": _op("Load a model", None, None, version, v2_error)},
        "/v2/repository/models/{model}/unload": {"post": _op("Unload a model", None, None, version, v2_error)},
    }
    for path, methods in ops.items():
        if "{model}" in path:
            param = {"name": "model", "in": "path", "required": True}
            if version == 2:
                param["type"] = "string"
            else:
                param["schema"] = {"type": "string"}
            for op in methods.values():
                op["parameters"] = [param, *op.get("parameters", [])]
    info = {"title": title, "version": server_version}
    if version == 2:
        return {"swagger": "2.0", "info": info, "schemes": ["http"], "paths": ops}
    return {"openapi": "3.0.3", "info": info, "paths": ops}


def _op(
    summary: str,
    request: dict[str, Any] | None,
    response: dict[str, Any] | None,
    version: int,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def body(schema: dict[str, Any] | None, description: str) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description}
        if schema is not None:
            if version == 2:
                out["schema"] = schema
            else:
                out["content"] = {"application/json": {"schema": schema}}
        return out

    op: dict[str, Any] = {"summary": summary, "responses": {"200": body(response, "Success")}}
    if error is not None:
        op["responses"]["default"] = body(error, "Error")
    if request is not None:
        if version == 2:
            op["parameters"] = [{"name": "body", "in": "body", "required": True, "schema": request}]
            op["consumes"] = ["application/json"]
            op["produces"] = ["application/json"]
        else:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    return op
