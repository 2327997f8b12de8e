"""The admin API, on its own port: AzureML's AksEndpoint calls, and ``/metrics`` for scrapers.

Every ``/admin`` route needs ``Authorization: Bearer <admin token>``; ``/metrics`` and
``/healthz`` need nothing. Changes go through ``RouterRuntime.apply`` (validated, persisted
atomically, swapped in whole) under the runtime's lock, so two concurrent PATCHes never lose
one another's change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router import config as cfg
from router.auth import admin_authorized
from router.errors import STATUS_TABLE, RouterError, render_error
from router.lifespan import RouterRuntime
from scoring import ConfigError

Handler = Callable[[Request], Awaitable[Response]]


class AdminUnauthorized(RouterError):
    pass


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _runtime(request: Request) -> RouterRuntime:
    runtime: RouterRuntime = request.app.state.runtime
    return runtime


def _require_admin(request: Request) -> RouterRuntime:
    runtime = _runtime(request)
    if not admin_authorized(request.headers.get("authorization"), runtime.admin_token):
        raise AdminUnauthorized("the admin API needs Authorization: Bearer <admin token>")
    return runtime


async def _body(request: Request) -> object:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ConfigError("body", "must be a JSON object") from None


def _endpoint_view(runtime: RouterRuntime, name: str) -> dict[str, Any]:
    route = runtime.table.endpoints.get(name)
    if route is None:
        raise cfg.EndpointNotFound(f"endpoint '{name}' not found")
    view = cfg.endpoint_to_dict(route.config)
    live = []
    for version in route.versions.values():
        replicas = version.replicas
        live.append(
            {
                "name": version.name,
                "traffic_percentile": version.config.traffic_percentile,
                "is_default": version.config.is_default,
                "version_type": version.config.version_type,
                "utilization": replicas.utilization(),
                "waiting": replicas.waiting,
                "replicas": [
                    {"url": r.url, "healthy": r.healthy, "outstanding": r.outstanding} for r in replicas.replicas
                ],
            }
        )
    view["live"] = live
    view["scoring_uri"] = f"/api/v1/service/{name}/score"
    return view


async def list_endpoints(request: Request) -> Response:
    runtime = _require_admin(request)
    return _Json([_endpoint_view(runtime, name) for name in runtime.table.endpoints])


async def get_endpoint(request: Request) -> Response:
    runtime = _require_admin(request)
    return _Json(_endpoint_view(runtime, request.path_params["ep"]))


async def patch_endpoint(request: Request) -> Response:
    runtime = _require_admin(request)
    name = request.path_params["ep"]
    data = await _body(request)
    base_dir = runtime.config.path.resolve().parent if runtime.config.path else runtime.state_dir
    changes = cfg.parse_endpoint_patch(data, base_dir)
    await runtime.change(lambda current: cfg.with_endpoint_patched(current, name, changes))
    return _Json(_endpoint_view(runtime, name))


async def create_version(request: Request) -> Response:
    runtime = _require_admin(request)
    name = request.path_params["ep"]
    version = cfg.parse_version(await _body(request))
    await runtime.change(lambda current: cfg.with_version_added(current, name, version))
    return _Json(_endpoint_view(runtime, name), status_code=201)


async def update_version(request: Request) -> Response:
    runtime = _require_admin(request)
    name, version = request.path_params["ep"], request.path_params["v"]
    changes = cfg.parse_version_patch(await _body(request))
    await runtime.change(lambda current: cfg.with_version_updated(current, name, version, changes))
    return _Json(_endpoint_view(runtime, name))


async def delete_version(request: Request) -> Response:
    runtime = _require_admin(request)
    name, version = request.path_params["ep"], request.path_params["v"]
    await runtime.change(lambda current: cfg.with_version_deleted(current, name, version))
    return _Json(_endpoint_view(runtime, name))


def _known_endpoint(runtime: RouterRuntime, name: str) -> None:
    if name not in runtime.table.endpoints:
        raise cfg.EndpointNotFound(f"endpoint '{name}' not found")


async def get_keys(request: Request) -> Response:
    runtime = _require_admin(request)
    name = request.path_params["ep"]
    _known_endpoint(runtime, name)
    return _Json(runtime.keys.get(name).as_api())


async def regenerate_keys(request: Request) -> Response:
    runtime = _require_admin(request)
    name = request.path_params["ep"]
    _known_endpoint(runtime, name)
    data = await _body(request)
    if not isinstance(data, dict):
        raise ConfigError("body", "must be a JSON object")
    unknown = sorted(set(data) - {"keyType", "keyValue"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key")
    # The key file is fsynced: off the loop.
    key_type: Any = data.get("keyType")  # checked by the key store (400 naming keyType)
    keys = await asyncio.to_thread(runtime.keys.regenerate, name, key_type, data.get("keyValue"))
    return _Json(keys.as_api())


async def issue_token(request: Request) -> Response:
    runtime = _require_admin(request)
    name = request.path_params["ep"]
    _known_endpoint(runtime, name)
    # The first token of an endpoint writes its secret (fsync): off the loop.
    return _Json(await asyncio.to_thread(runtime.tokens.issue, name, time.time()))


async def metrics(request: Request) -> Response:
    return Response(generate_latest(_runtime(request).registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return _Json({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 as JSON, like every other admin error."""
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    body = orjson.dumps({"error": kind, "message": str(exc.detail)})
    return Response(body, exc.status_code, dict(exc.headers or {}), "application/json")


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AdminUnauthorized):
        body = orjson.dumps({"error": "unauthorized", "message": str(exc)})
        return Response(body, 401, {"www-authenticate": 'Bearer realm="infergate-admin"'}, "application/json")
    status, headers, body = render_error(exc)
    return Response(body, status, {k.decode(): v.decode() for k, v in headers}, "application/json")


def build_admin_app(runtime: RouterRuntime) -> Starlette:
    """The admin port's app. ``runtime`` is started and closed by ``router.app.serve``."""
    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/admin/endpoints", list_endpoints, methods=["GET"]),
        Route("/admin/endpoints/{ep}", get_endpoint, methods=["GET"]),
        Route("/admin/endpoints/{ep}", patch_endpoint, methods=["PATCH"]),
        Route("/admin/endpoints/{ep}/versions", create_version, methods=["POST"]),
        Route("/admin/endpoints/{ep}/versions/{v}", update_version, methods=["PATCH"]),
        Route("/admin/endpoints/{ep}/versions/{v}", delete_version, methods=["DELETE"]),
        Route("/admin/endpoints/{ep}/keys", get_keys, methods=["GET"]),
        Route("/admin/endpoints/{ep}/regenerate-keys", regenerate_keys, methods=["POST"]),
        Route("/admin/endpoints/{ep}/token", issue_token, methods=["POST"]),
    ]
    handlers: dict[Any, Handler] = {cls: _error for cls, _, _ in STATUS_TABLE}  # type: ignore[misc]
    handlers[RouterError] = _error  # type: ignore[assignment]
    handlers[HTTPException] = _http_error  # type: ignore[assignment]
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.runtime = runtime
    return app
