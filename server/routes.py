"""Endpoints: parse -> scoring -> render. Errors are raised and rendered by the middleware
through the one table in ``server/errors.py``.

``ROUTES`` at the bottom lists every URL the server answers.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from scoring import (
    EntryScriptResponse,
    InferRequest,
    InferResult,
    InvalidInput,
    ModelNotReady,
    ModelStatus,
    RawRequest,
)
from server import codec, openapi
from server.errors import (
    AmbiguousModel,
    BadRequest,
    ClientGone,
    MethodNotAllowed,
    PayloadTooLarge,
    ScoringTimeout,
    Unavailable,
    UnsupportedMediaType,
)
from server.middleware import RequestInfo
from server.state import ServerState

SERVER_NAME = "infergate"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"]

_JSON = "application/json"
_EMPTY_OK = Response(status_code=200)

T = TypeVar("T")


def _state(request: Request) -> ServerState:
    server: ServerState = request.scope["state"]["server"]
    return server


def _info(request: Request) -> RequestInfo:
    info: RequestInfo = request.scope["infergate"]
    return info


class BodyResponse(Response):
    """A 200 with its body ready: headers built in one step (Starlette's ``init_headers``
    scans and encodes them per response, a measurable share of a one-row request)."""

    def __init__(self, body: bytes, content_type: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", content_type), *extra]


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if status == 200 and not headers:
        return BodyResponse(codec.dumps(value), b"application/json")
    return Response(codec.dumps(value), status_code=status, media_type=_JSON, headers=headers)


def _version(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # "²".isdigit() is True
        raise InvalidInput(f"version: must be a positive integer, got '{text}'", field="version")
    return int(text)


class BodyHeaders:
    """The request headers the body readers need, read in one pass over the raw list
    (Starlette's ``request.headers`` builds a mapping per request and scans it per lookup)."""

    __slots__ = ("media_type", "length", "encoding", "inference_header_length")

    def __init__(self, scope: Scope) -> None:
        content_type = length = encoding = header_length = None
        for key, value in scope["headers"]:
            # The first of repeated headers wins, as with ``request.headers.get``.
            if key == b"content-type":
                content_type = value if content_type is None else content_type
            elif key == b"content-length":
                length = value if length is None else length
            elif key == b"content-encoding":
                encoding = value if encoding is None else encoding
            elif key == b"inference-header-content-length":
                header_length = value if header_length is None else header_length
        self.media_type = (
            "" if content_type is None else content_type.decode("latin-1").split(";", 1)[0].strip().lower()
        )
        self.length = None if length is None else length.decode("latin-1")
        self.encoding = None if encoding is None else encoding.decode("latin-1").strip().lower()
        self.inference_header_length = None if header_length is None else header_length.decode("latin-1")


# Media types whose body is parsed as JSON: tritonclient sends none, and `curl -d` sends
# application/x-www-form-urlencoded unless told otherwise.
_JSON_LIKE = frozenset(("", _JSON, "text/plain", "application/x-www-form-urlencoded"))


def _check_json_body(headers: BodyHeaders, allow_binary: bool) -> None:
    """JSON with or without a JSON content type."""
    media = headers.media_type
    if media in _JSON_LIKE or (media.startswith("application/") and media.endswith("+json")):
        return
    if allow_binary and media == "application/octet-stream":
        return
    expected = "application/json" + (" or application/octet-stream" if allow_binary else "")
    raise UnsupportedMediaType(f"Content-Type: expected {expected}, got '{media}'")


async def read_body(request: Request, limit: int, headers: BodyHeaders | None = None) -> bytes:
    """The whole body, refusing (413) past ``limit`` bytes before buffering it whole."""
    if headers is None:
        headers = BodyHeaders(request.scope)
    length = headers.length
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}")
    receive = request.receive
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client disconnected while sending the body")
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.encoding
    if encoding is None or encoding == "identity":
        return body
    return _decompress(body, encoding, limit)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate request bodies (tritonclient's request compression), bounded by ``limit``."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(f"Content-Encoding: expected gzip or deflate, got '{encoding}'")
    for bits in (wbits, -zlib.MAX_WBITS) if encoding == "deflate" else (wbits,):
        inflater = zlib.decompressobj(bits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"Content-Encoding {encoding}: the compressed body is truncated")
        return out
    raise BadRequest(f"Content-Encoding {encoding}: the body is not valid {encoding} data")


async def _scored(server: ServerState, info: RequestInfo, awaitable: Awaitable[T]) -> T:
    """Await scoring within the request's --scoring-timeout-ms (counted from arrival).

    For models whose batcher answers by the deadline itself (``model.enforces_deadline``)
    ``_infer_by_deadline`` skips this: a timer per request costs more than the batcher's one.

    What ``asyncio.timeout`` does, with one timer handle and no context object: half its
    cost per request. The cancellation count is checked as ``asyncio.timeout`` checks it,
    so a cancellation from elsewhere (the client went away) is not taken for a timeout.
    """
    timeout_s = server.config.scoring_timeout_ms / 1000.0
    remaining = timeout_s - (time.perf_counter() - info.started)
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(max(remaining, 0.0), expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            raise ScoringTimeout(
                f"scoring took longer than {server.config.scoring_timeout_ms} ms"
            ) from None
        raise
    finally:
        timer.cancel()


def _infer_by_deadline(
    server: ServerState, info: RequestInfo, model: Any, request: InferRequest
) -> Awaitable[InferResult]:
    """``model.infer(request)``, answered by the request's deadline: by the model's batcher
    when it enforces deadlines itself, else under ``_scored``'s timer."""
    scoring = model.infer(request)
    return scoring if model.enforces_deadline else _scored(server, info, scoring)


def _deadline(server: ServerState, info: RequestInfo) -> float:
    # perf_counter and monotonic share a clock on Linux, but compute from monotonic to be exact.
    waited = time.perf_counter() - info.started
    return time.monotonic() - waited + server.config.scoring_timeout_ms / 1000.0


# --------------------------------------------------------------------------- health


async def live(request: Request) -> Response:
    return _EMPTY_OK


async def ready(request: Request) -> Response:
    server = _state(request)
    if server.lifecycle.draining:
        raise Unavailable("server is shutting down")
    if server.repository is None:
        raise Unavailable("models are still loading")
    if not server.repository.ready():
        raise Unavailable(_not_ready_message(server.repository.index()))
    return _EMPTY_OK


def _not_ready_message(index: list[ModelStatus]) -> str:
    """Which versions are not ready and why, so an operator reading a failed probe knows
    which model to look at (the repository index has the full list)."""
    pending = [s for s in index if s.state != "READY" and s.reason != "unloaded"]
    shown = "; ".join(f"{s.name}/{s.version} {s.state}" + (f" ({s.reason[:200]})" if s.reason else "") for s in pending[:10])
    more = f"; and {len(pending) - 10} more" if len(pending) > 10 else ""
    return f"models not ready: {shown}{more} (see /v2/repository/index)" if shown else "models are still loading"


async def server_metadata(request: Request) -> Response:
    return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def azureml_health(request: Request) -> Response:
    return PlainTextResponse("Healthy")


async def metrics(request: Request) -> Response:
    body = _state(request).metrics.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


# --------------------------------------------------------------------------- v2 models


async def model_metadata(request: Request) -> Response:
    server = _state(request)
    name = request.path_params["model"]
    version_text = request.path_params.get("version")
    model = server.repository.get(name, _version(version_text))
    md = model.metadata
    if version_text:
        versions = [str(md.id.version)]
    else:
        versions = sorted(
            {
                str(s.version)
                for s in server.repository.index()
                if s.name == name and s.state == "READY" and s.version is not None
            },
            key=int,
        )
    return _json(
        {
            "name": md.id.name,
            "versions": versions,
            "platform": md.platform,
            "inputs": codec.tensor_specs(md.inputs),
            "outputs": codec.tensor_specs(md.outputs),
            "parameters": {
                "providers": list(md.providers),
                "batched": md.batched,
                "max_batch_size": md.max_batch_size,
            },
            "providers": list(md.providers),
        }
    )


async def model_ready(request: Request) -> Response:
    server = _state(request)
    server.repository.get(request.path_params["model"], _version(request.path_params.get("version")))
    return _EMPTY_OK


async def infer(request: Request) -> Response:
    server = _state(request)
    info = _info(request)
    name: str = request.path_params["model"]
    version_text: str | None = request.path_params.get("version")
    # Metric labels only take names the repository knows: a client must not be able to
    # create label sets at will. Unknown model or version: both labels empty.
    info.model, info.version, info.protocol = "", "", "v2"
    server.metrics.inflight.inc()  # the middleware decrements (info.model is set)
    try:
        model = server.repository.get(name, _version(version_text))
    except ModelNotReady:
        info.model = name
        raise
    info.model = name
    md = model.metadata
    info.version = version = str(md.id.version)
    headers = BodyHeaders(request.scope)
    _check_json_body(headers, allow_binary=True)
    header_length_text = headers.inference_header_length
    header_length: int | None = None
    if header_length_text is not None:
        if not (header_length_text.isascii() and header_length_text.isdigit()):  # not "²"
            raise InvalidInput(
                f"Inference-Header-Content-Length: must be an integer, got '{header_length_text}'",
                field="Inference-Header-Content-Length",
            )
        header_length = int(header_length_text)
    body = await read_body(request, server.config.max_request_bytes, headers)
    model.check_capacity()  # shed before decoding: decoding only to shed is what overload costs
    decoded = codec.decode_infer_request(body, header_length)

    started_ns = time.time_ns() if info.span is not None else 0  # for the span's phases
    scoring_request = InferRequest(decoded.inputs, decoded.outputs, _deadline(server, info), info.request_id)
    result = await _infer_by_deadline(server, info, model, scoring_request)
    server.metrics.observe_result(name, version, result)
    if info.span is not None:
        server.tracing.record_phases(info.span, started_ns, result.queue_s, result.compute_s)

    outputs = result.outputs
    if decoded.outputs is not None:  # answer in the order asked
        outputs = {key: outputs[key] for key in decoded.outputs if key in outputs}
    payload, header_len = codec.encode_infer_response(
        md.id.name, version, decoded.id, outputs, decoded.binary_outputs, decoded.binary_default
    )
    if header_len is None:
        return BodyResponse(payload, b"application/json")
    return BodyResponse(
        payload, b"application/octet-stream", ((b"inference-header-content-length", b"%d" % header_len),)
    )


# --------------------------------------------------------------------------- repository


async def repository_index(request: Request) -> Response:
    server = _state(request)
    body = await read_body(request, server.config.max_request_bytes)
    only_ready = False
    if body.strip():
        doc = codec.loads(body)
        if not isinstance(doc, dict):
            raise InvalidInput("body: must be a JSON object", field="body")
        only_ready = doc.get("ready", False)
        if not isinstance(only_ready, bool):
            raise InvalidInput("ready: must be true or false", field="ready")
    rows = []
    for status in server.repository.index():
        if only_ready and status.state != "READY":
            continue
        row: dict[str, Any] = {"name": status.name, "state": status.state, "reason": status.reason}
        if status.version is not None:
            row["version"] = str(status.version)
        rows.append(row)
    return _json(rows)


async def _repository_body(request: Request, server: ServerState) -> None:
    body = await read_body(request, server.config.max_request_bytes)
    if body.strip():  # tritonclient sends {"parameters": {...}}; accepted, not needed
        doc = codec.loads(body)
        if not isinstance(doc, dict):
            raise InvalidInput("body: must be a JSON object", field="body")


async def repository_load(request: Request) -> Response:
    server = _state(request)
    await _repository_body(request, server)
    await server.repository.load(request.path_params["model"])
    return _EMPTY_OK


async def repository_unload(request: Request) -> Response:
    server = _state(request)
    await _repository_body(request, server)
    await server.repository.unload(request.path_params["model"])
    return _EMPTY_OK


# --------------------------------------------------------------------------- AzureML /score


def score_model_name(server: ServerState) -> str:
    """--score-model, or the repository's only model; 400 when that is ambiguous."""
    if server.config.score_model:
        return server.config.score_model
    names = server.repository.model_names()
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise AmbiguousModel("/score: the repository has no model")
    raise AmbiguousModel(
        f"/score: the repository has several models ({', '.join(sorted(names))}); "
        "start the server with --score-model NAME, or use /v2/models/NAME/infer"
    )


def _query_input(request: Request) -> dict[str, Any]:
    """GET /score?k=v: values parsed as JSON when they are JSON (as AzureML does)."""
    out: dict[str, Any] = {}
    for key in request.query_params.keys():
        values = [_maybe_json(v) for v in request.query_params.getlist(key)]
        out[key] = values[0] if len(values) == 1 else values
    return out


def _maybe_json(text: str) -> Any:
    try:
        return codec.loads(text.encode())
    except InvalidInput:
        return text


def _check_request_ids(info: RequestInfo) -> None:
    ids = info.header_ids
    if len(ids) == 2 and ids[b"x-ms-request-id"] != ids[b"x-request-id"]:
        raise BadRequest(
            "x-request-id and x-ms-request-id header values should be the same "
            "(if you are sending both in the request)"
        )


async def score(request: Request) -> Response:
    server = _state(request)
    info = _info(request)
    info.protocol = "azureml"
    _check_request_ids(info)
    name = score_model_name(server)
    info.model, info.version = name, ""
    server.metrics.inflight.inc()  # the middleware decrements (info.model is set)
    model = server.repository.get(name)
    md = model.metadata
    info.version = str(md.id.version)
    method = request.method

    if md.entry_script:
        raw = _wants_request(model)
        if method == "OPTIONS" and not raw:
            raise MethodNotAllowed("Method not allowed", allow="GET, POST")
        if method == "GET" and not raw:
            body = codec.dumps(_query_input(request))
        else:
            body = await read_body(request, server.config.max_request_bytes)
        raw_request = _raw_request(request, body) if raw else None
        started = time.perf_counter()
        try:
            output = await _scored(server, info, model.run_entry_script(body, raw_request))
        finally:
            info.exec_ms = (time.perf_counter() - started) * 1000.0
        return _azureml_response(output)

    if method == "OPTIONS":
        raise MethodNotAllowed("Method not allowed", allow="GET, POST")
    if method == "GET":
        doc: Any = _query_input(request)
    else:
        headers = BodyHeaders(request.scope)
        _check_json_body(headers, allow_binary=False)
        doc = codec.loads(await read_body(request, server.config.max_request_bytes, headers))
    inputs = _score_inputs(doc, md)
    started = time.perf_counter()
    started_ns = time.time_ns() if info.span is not None else 0  # for the span's phases
    try:
        scoring_request = InferRequest(inputs, None, _deadline(server, info), info.request_id)
        result = await _infer_by_deadline(server, info, model, scoring_request)
    finally:
        info.exec_ms = (time.perf_counter() - started) * 1000.0
    server.metrics.observe_result(name, info.version, result)
    if info.span is not None:
        server.tracing.record_phases(info.span, started_ns, result.queue_s, result.compute_s)
    outputs = result.outputs
    if len(outputs) == 1:
        return _json(next(iter(outputs.values())))
    return _json(outputs)


def _score_inputs(doc: Any, md: Any) -> dict[str, np.ndarray]:
    """{"data": rows} for a one-input model, or {"<input>": rows, ...}."""
    if not isinstance(doc, dict) or not doc:
        raise InvalidInput(
            'body: expected {"data": [...]} or {"<input name>": [...], ...}', field="body"
        )
    specs = {spec.name: spec for spec in md.inputs}
    items: list[tuple[str, str, Any]] = []  # (field as sent, input name, value)
    if "data" in doc and "data" not in specs:
        if len(md.inputs) != 1:
            raise InvalidInput(
                f"data: the model has {len(md.inputs)} inputs ({', '.join(specs)}); "
                "send them by name",
                field="data",
            )
        items.append(("data", md.inputs[0].name, doc["data"]))
    else:
        items = [(key, key, value) for key, value in doc.items()]
    inputs: dict[str, np.ndarray] = {}
    for field, key, value in items:
        spec = specs.get(key)
        if spec is None:
            raise InvalidInput(
                f"{key}: the model has no input '{key}' (inputs: {', '.join(specs)})", field=key
            )
        arr = codec.array_from_json(value, spec.datatype, None, field)
        if arr.ndim == len(spec.shape) - 1:  # a single row without its batch dimension
            arr = arr[np.newaxis, ...]
        inputs[key] = arr
    return inputs


def _azureml_response(output: Any) -> Response:
    """What AzureML's server answers for run()'s return value."""
    if isinstance(output, EntryScriptResponse):  # the script built its own (AMLResponse)
        return Response(output.body, status_code=output.status_code, headers=output.headers)
    headers: dict[str, str] = {}
    body = output
    if isinstance(output, dict) and ("aml_response_headers" in output or "aml_response_body" in output):
        headers = {str(k): str(v) for k, v in (output.get("aml_response_headers") or {}).items()}
        body = output.get("aml_response_body")
    return Response(codec.dumps(body), media_type=_JSON, headers=headers)


def _raw_request(request: Request, body: bytes) -> RawRequest:
    """What a ``@rawhttp`` run(request) receives (scoring's Flask-like RawRequest)."""
    return RawRequest(
        data=body,
        method=request.method,
        path=request.url.path,
        headers=dict(request.headers),
        args=dict(request.query_params),
    )


def _wants_request(model: Any) -> bool:
    """Whether the entry script's run() is ``@rawhttp`` (it then also answers OPTIONS)."""
    return bool(getattr(getattr(model, "entry", None), "rawhttp", False))


async def swagger(request: Request) -> Response:
    server = _state(request)
    version = request.query_params.get("version", "2")
    if version not in ("2", "3"):
        raise InvalidInput(
            f"version: swagger version {version} is not supported (supported: 2, 3)", field="version"
        )
    try:
        md = server.repository.get(score_model_name(server)).metadata
    except Exception:  # several models, or not ready: describe the routes alone
        md = None
    return _json(openapi.document(md, int(version), SERVER_VERSION))


class Endpoint:
    """A request -> response function as a plain ASGI app.

    Starlette wraps plain functions in two more layers (its exception-handler lookup and a
    send wrapper); errors here are rendered by ``RequestMiddleware`` instead, so each
    route is this one call.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Request], Awaitable[Response]]) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.fn(Request(scope, receive))
        await response(scope, receive, send)


def _route(path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str]) -> Route:
    return Route(path, Endpoint(fn), methods=methods)


def infer_path_params(path: str) -> dict[str, str] | None:
    """The path parameters of ``/v2/models/{model}[/versions/{version}]/infer`` (None for
    any other path), by plain string tests: what the two infer routes' regexes match."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[11:-6].split("/")
    if len(parts) == 1 and parts[0]:
        return {"model": parts[0]}
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return {"model": parts[0], "version": parts[2]}
    return None


class ScoringRouter(Router):
    """Starlette's Router, except that POST .../infer, which carries nearly every request,
    goes straight to its endpoint: the route scan, regex match and scope merging cost
    about as much per request as the rest of routing and rendering together."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            params = infer_path_params(scope["path"])
            if params is not None:
                scope["path_params"] = params
                await _INFER(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_INFER = Endpoint(infer)

# Inference routes first: the router tries routes in order, one regex each (ScoringRouter
# answers POSTs to them before the scan; the entries still give GET on them its 405).
ROUTES = [
    _route("/v2/models/{model}/infer", infer, ["POST"]),
    _route("/v2/models/{model}/versions/{version}/infer", infer, ["POST"]),
    _route("/score", score, ["GET", "POST", "OPTIONS"]),
    _route("/v2/health/live", live, ["GET"]),
    _route("/v2/health/ready", ready, ["GET"]),
    _route("/v2", server_metadata, ["GET"]),
    _route("/v2/models/{model}", model_metadata, ["GET"]),
    _route("/v2/models/{model}/versions/{version}", model_metadata, ["GET"]),
    _route("/v2/models/{model}/ready", model_ready, ["GET"]),
    _route("/v2/models/{model}/versions/{version}/ready", model_ready, ["GET"]),
    _route("/v2/repository/index", repository_index, ["POST"]),
    _route("/v2/repository/models/{model}/load", repository_load, ["POST"]),
    _route("/v2/repository/models/{model}/unload", repository_unload, ["POST"]),
    _route("/", azureml_health, ["GET"]),
    _route("/swagger.json", swagger, ["GET"]),
    _route("/metrics", metrics, ["GET"]),
]
