"""AzureML-compatible entry scripts: a ``score.py`` with ``init()`` and ``run(raw_data)``.

Semantics, as AzureML defines them, so that an existing ``score.py`` works unchanged:

- ``AZUREML_MODEL_DIR`` points at the model folder when ``init()`` runs (the version
  folder, or ``--model-dir``); the script's folder is on ``sys.path`` so its sibling
  modules import.
- ``run(raw_data)`` receives the request body decoded to ``str``; its return value is
  handed back to be JSON-serialized (numpy values become lists). An exception becomes
  ``InferenceFailed`` carrying its message.
- ``run`` decorated with inference-schema's ``@input_schema``/``@output_schema`` is called
  as ``run(**params)`` with the parameters taken by name from the JSON body; the schemas
  become ``swagger`` fragments (``ServiceInput``/``ServiceOutput``).
- ``run`` decorated with ``@rawhttp`` (``azureml.contrib.services.aml_request`` or
  ``azureml_inference_server_http.api.aml_request``) receives the request object. Those
  modules are not required: when they are not installed a small stand-in is registered so
  the script's import works. An ``AMLResponse`` it returns becomes ``EntryScriptResponse``.
- Beyond AzureML: a script may define ``run_batch(list_of_raw_data) -> list`` to opt into
  micro-batching (one result per body, in order).

Concurrency: AzureML's server runs one ``run()`` at a time per worker process, so scripts
are not expected to be thread-safe. infergate keeps that: at most ``instance_count``
(default 1) calls of a script run at once, in the repository's thread pool, never on the
event loop. ``init()`` calls are serialized process-wide (they set ``AZUREML_MODEL_DIR``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scoring.errors import InferenceFailed, InvalidInput, ModelLoadError, ScoringError

log = logging.getLogger("infergate.scoring")

# Import and init() of entry scripts mutate process state (sys.path, os.environ).
_INIT_LOCK = threading.Lock()

RAWHTTP_MODULES = ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request")
RESPONSE_MODULES = ("azureml.contrib.services.aml_response", "azureml_inference_server_http.api.aml_response")
_RAWHTTP_MARK = "__infergate_rawhttp__"


@dataclass
class RawRequest:
    """The request object a ``@rawhttp`` ``run(request)`` receives when the server passes
    none of its own: the Flask-like subset AzureML scripts use."""

    data: bytes = b""
    method: str = "POST"
    path: str = "/score"
    headers: Mapping[str, str] = field(default_factory=dict)
    args: Mapping[str, str] = field(default_factory=dict)  # query parameters

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self.data.decode("utf-8") if as_text else self.data

    def get_json(self, silent: bool = False) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        return self.get_json()

    @property
    def full_path(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.path}?{query}"


@dataclass(frozen=True)
class EntryScriptResponse:
    """A response the script built itself (AzureML's ``AMLResponse``): sent as is."""

    body: bytes
    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class _StandInAMLResponse:
    """What ``AMLResponse(message, status_code, response_headers, json_str)`` needs to be
    when azureml's packages are not installed."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
    ) -> None:
        if json_str:
            message = json.dumps(message)
        self._data = message if isinstance(message, bytes) else str(message).encode("utf-8")
        self.status_code = int(status_code)
        self.headers = dict(response_headers or {})

    def get_data(self) -> bytes:
        return self._data


def _stand_in_rawhttp(func: Callable[..., Any]) -> Callable[..., Any]:
    """Stand-in for AzureML's ``rawhttp``: marks ``run`` as wanting the request object."""
    setattr(func, _RAWHTTP_MARK, True)
    return func


def install_azureml_stand_ins() -> None:
    """Register stand-in ``rawhttp``/``AMLRequest``/``AMLResponse`` modules for the ones
    that do not import (the real packages win when installed)."""
    for name in RAWHTTP_MODULES + RESPONSE_MODULES:
        if _importable(name):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub in sys.modules:
                continue
            module = types.ModuleType(sub)
            module.__path__ = []  # a package, so children can be found in sys.modules
            module.__doc__ = "infergate stand-in (the real AzureML package is not installed)"
            sys.modules[sub] = module
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
        leaf = sys.modules[name]
        if name in RAWHTTP_MODULES:
            leaf.rawhttp = _stand_in_rawhttp  # type: ignore[attr-defined]
            leaf.AMLRequest = RawRequest  # type: ignore[attr-defined]
            leaf._rawHttpRequested = False  # type: ignore[attr-defined]
        else:
            leaf.AMLResponse = _StandInAMLResponse  # type: ignore[attr-defined]


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class EntryScript:
    """A loaded ``score.py`` and how to call it."""

    def __init__(self, module: types.ModuleType, executor: Executor, label: str) -> None:
        self.module = module
        self.executor = executor
        self.label = label
        self.run_fn: Callable[..., Any] | None = getattr(module, "run", None)
        self.run_batch_fn: Callable[[list[str]], Any] | None = getattr(module, "run_batch", None)
        if self.run_fn is None and self.run_batch_fn is None:
            raise ModelLoadError(f"{label}: score.py defines neither run() nor run_batch()")
        self.rawhttp = self.run_fn is not None and _wants_rawhttp(module, self.run_fn)
        self.schema_params: tuple[str, ...] | None = None
        self.swagger: dict[str, Any] | None = None
        if self.run_fn is not None and not self.rawhttp:
            self._read_schema(self.run_fn)
        self.batched = self.run_batch_fn is not None

    @classmethod
    def load(
        cls,
        script: Path,
        model_dir: Path,
        executor: Executor,
        label: str = "entry script",
    ) -> EntryScript:
        """Import ``script`` and run its ``init()`` (blocking: call it off the event loop)."""
        script = Path(script).resolve()
        # A unique module name per script: inference-schema keys its registry by
        # module.function, and two models' score.py must not collide.
        digest = hashlib.sha1(str(script).encode()).hexdigest()[:12]
        module_name = f"infergate_entry_{digest}"
        with _INIT_LOCK:
            install_azureml_stand_ins()
            for name in RAWHTTP_MODULES:
                real = sys.modules.get(name)
                if real is not None and hasattr(real, "_rawHttpRequested"):
                    setattr(real, "_rawHttpRequested", False)  # the real rawhttp sets this global
            folder = str(script.parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            spec = importlib.util.spec_from_file_location(module_name, script)
            if spec is None or spec.loader is None:
                raise ModelLoadError(f"{label}: {script.name}: cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(module_name, None)
                raise ModelLoadError(f"{label}: {script.name}: import failed: {type(exc).__name__}: {exc}") from exc
            entry = cls(module, executor, label)
            init = getattr(module, "init", None)
            if init is not None:
                os.environ["AZUREML_MODEL_DIR"] = str(Path(model_dir).resolve())
                try:
                    init()
                except Exception as exc:
                    raise ModelLoadError(f"{label}: {script.name}: init() failed: {type(exc).__name__}: {exc}") from exc
        return entry

    def _read_schema(self, run: Callable[..., Any]) -> None:
        util = sys.modules.get("inference_schema.schema_util")
        if util is None or not util.is_schema_decorated(run):
            return
        self.schema_params = tuple(inspect.signature(run).parameters)
        self.swagger = {
            "ServiceInput": util.get_input_schema(run),
            "ServiceOutput": util.get_output_schema(run),
            "versions": list(util.get_supported_versions(run)),
        }

    def close(self) -> None:
        """Nothing to release: the module stays imported (Python cannot unload it)."""

    # ------------------------------------------------------------------ calls

    def call_sync(self, body: bytes, request: object | None = None) -> object:
        """One ``run()`` call (blocking; runs in the executor)."""
        assert self.run_fn is not None
        try:
            if self.rawhttp:
                result = self.run_fn(request if request is not None else RawRequest(data=body))
            elif self.schema_params is not None:
                result = self.run_fn(**self._params(body))
            else:
                result = self.run_fn(body.decode("utf-8", errors="replace"))
        except ScoringError:
            raise
        except Exception as exc:
            raise InferenceFailed(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)) from exc
        return to_response(result)

    def call_batch_sync(self, bodies: list[str]) -> list[object]:
        """One ``run_batch()`` call for several bodies (blocking; runs in the executor)."""
        assert self.run_batch_fn is not None
        try:
            results = self.run_batch_fn(bodies)
        except Exception as exc:
            raise InferenceFailed(str(exc) or type(exc).__name__) from exc
        results = list(results) if not isinstance(results, list) else results
        if len(results) != len(bodies):
            raise InferenceFailed(f"{self.label}: run_batch() returned {len(results)} results for {len(bodies)} requests")
        return [to_response(r) for r in results]

    def _params(self, body: bytes) -> dict[str, Any]:
        assert self.schema_params is not None
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from exc
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object of run() parameters", field="body")
        for key in data:
            if key not in self.schema_params:
                raise InvalidInput(
                    f"unknown parameter '{key}' (run() takes {', '.join(self.schema_params)})", field=key
                )
        return data

    async def call(self, body: bytes, request: object | None = None) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.call_sync, body, request)

    async def run_batch(self, inputs: dict[str, np.ndarray], names: Any = None) -> dict[str, np.ndarray]:
        """Batcher adapter: ``inputs["body"]`` is an object array of bodies."""
        loop = asyncio.get_running_loop()
        bodies = [b.decode("utf-8", errors="replace") if isinstance(b, bytes) else str(b) for b in inputs["body"]]
        results = await loop.run_in_executor(self.executor, self.call_batch_sync, bodies)
        out = np.empty(len(results), dtype=object)
        out[:] = results
        return {"result": out}


def _wants_rawhttp(module: types.ModuleType, run: Callable[..., Any]) -> bool:
    if getattr(run, _RAWHTTP_MARK, False):
        return True
    # The real azureml ``rawhttp`` only flips a module global of its own module.
    for name in RAWHTTP_MODULES:
        real = sys.modules.get(name)
        if real is not None and getattr(real, "_rawHttpRequested", False):
            return True
    return False


def to_response(result: object) -> object:
    """A script's return value as something JSON-serializable, or an EntryScriptResponse."""
    status = getattr(result, "status_code", None)
    get_data = getattr(result, "get_data", None)
    if isinstance(status, int) and callable(get_data):  # AMLResponse (Flask Response or stand-in)
        data = get_data()
        body = data if isinstance(data, bytes) else str(data).encode("utf-8")
        headers = {str(k): str(v) for k, v in dict(getattr(result, "headers", {}) or {}).items()}
        return EntryScriptResponse(body=body, status_code=status, headers=headers)
    return jsonable(result)


def jsonable(value: object) -> object:
    """numpy arrays and scalars (also nested in lists/dicts) -> plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
