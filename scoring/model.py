"""``Model``: one loaded model version as the server sees it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from scoring.batcher import Batcher
from scoring.config import ModelConfig
from scoring.errors import DeadlineExceeded, InvalidInput, ModelNotReady, Overloaded
from scoring.runner import Runner
from scoring.types import InferRequest, InferResult, ModelMetadata
from scoring.validation import RequestValidator

if TYPE_CHECKING:
    from scoring.entry_script import EntryScript

T = TypeVar("T")


class Model:
    """A loaded model version: validates requests, then micro-batches them (when
    ``metadata.batched``) or runs them one by one, at most ``instance_count`` at once.

    Unbatched requests are bounded too: past ``max_queue_size`` waiting requests a
    submission fails at once with ``Overloaded``.
    """

    def __init__(
        self,
        metadata: ModelMetadata,
        config: ModelConfig,
        runner: Runner | None = None,
        entry: EntryScript | None = None,
    ) -> None:
        self.metadata = metadata
        self.config = config
        self.runner = runner
        self.entry = entry
        self._validator = RequestValidator(metadata.inputs, metadata.outputs, metadata.batched)
        self._batcher: Batcher | None = None
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self._inflight = 0
        self._closed = False
        self._idle: asyncio.Event | None = None
        # True once a batcher serves infer(): it answers every request by its deadline
        # (DeadlineExceeded, queued or computing), so a caller needs no timer of its own.
        self.enforces_deadline = False

    async def start(self) -> None:
        """Create the loop-bound parts (queue, batcher task); call inside the event loop."""
        instances = self.config.instances(entry_script=self.entry is not None)
        self._slots = asyncio.Semaphore(instances)
        self._idle = asyncio.Event()
        self._idle.set()
        run = self.runner.run if self.runner is not None else self.entry.run_batch if self.entry else None
        if self.metadata.batched and run is not None:
            self._batcher = Batcher(
                run,
                self.config.batching,
                instances,
                label=str(self.metadata.id),
                # An ONNX runner computes at most `instances` runs at once (its own threads),
                # so full batches may be formed ahead; an entry script's calls share a pool.
                staged=instances if self.runner is not None else 0,
            )
            self._batcher.start()
            self.enforces_deadline = self.runner is not None

    def stop_accepting(self) -> None:
        """From now on new requests fail with ModelNotReady("unloading")."""
        self._closed = True
        if self._batcher is not None:
            self._batcher.stop_accepting()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests; let queued and in-flight ones finish within ``timeout_s``."""
        self.stop_accepting()
        deadline = time.monotonic() + timeout_s
        if self._batcher is not None:
            await self._batcher.close(timeout_s)
        if self._idle is not None and not self._idle.is_set():
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                pass
        if self.entry is not None:
            self.entry.close()
        if self.runner is not None:
            self.runner.close()

    def queue_depth(self) -> int:
        """Requests waiting to be computed (not counting those computing now)."""
        if self._batcher is not None:
            return self._batcher.queue_depth()
        return self._waiting

    def check_capacity(self) -> None:
        """Raise ``Overloaded`` when a request arriving now would be shed anyway, so a server
        can answer before it decodes the body: under overload, decoding requests only to
        shed them starved the event loop (the accepted ones waited seconds)."""
        depth = self.queue_depth()
        if self.runner is not None and depth >= self.config.batching.max_queue_size:
            raise Overloaded(f"{self.metadata.id}: {depth} requests queued (max_queue_size); try again later", retry_after_s=1.0)

    async def infer(self, request: InferRequest) -> InferResult:
        """Validate, then compute. Raises InvalidInput, Overloaded, DeadlineExceeded,
        ModelNotReady (closing) or InferenceFailed."""
        md = self.metadata
        if self.runner is None:
            raise InvalidInput("this model is an entry script; post its raw body instead", field="model")
        rows, key = self._validator.check(request)
        if self._closed:
            raise ModelNotReady(md.id.name, md.id.version, "unloading")
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise DeadlineExceeded(f"{md.id}: deadline passed before the request was queued")
        if self._batcher is not None:
            return await self._batcher.submit(request.inputs, request.outputs, rows, request.deadline, key)
        return await self._run_one(request)

    async def _run_one(self, request: InferRequest) -> InferResult:
        assert self.runner is not None
        runner = self.runner
        arrived = time.monotonic()
        outputs, started, done = await self._bounded(
            lambda: runner.run(request.inputs, request.outputs), request.deadline
        )
        return InferResult(outputs, queue_s=started - arrived, compute_s=done - started, batch_rows=_rows(request))

    async def _bounded(self, call: Callable[[], Awaitable[T]], deadline: float | None = None) -> tuple[T, float, float]:
        """Run ``call`` when one of the ``instance_count`` slots is free; at most
        ``max_queue_size`` callers wait for one (beyond: Overloaded at once)."""
        assert self._slots is not None and self._idle is not None
        md = self.metadata
        if self._waiting >= self.config.batching.max_queue_size:
            raise Overloaded(f"{md.id}: {self._waiting} requests waiting; try again later")
        self._waiting += 1
        self._inflight += 1  # waiting or running: close() drains both
        self._idle.clear()
        try:
            await self._slots.acquire()
        except BaseException:
            self._done_one()
            raise
        finally:
            self._waiting -= 1
        try:
            started = time.monotonic()
            if deadline is not None and started >= deadline:
                raise DeadlineExceeded(f"{md.id}: deadline passed while queued")
            result = await call()
            return result, started, time.monotonic()
        finally:
            self._slots.release()
            self._done_one()

    def _done_one(self) -> None:
        assert self._idle is not None
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()

    async def run_entry_script(self, body: bytes, request: object | None = None) -> object:
        """AzureML ``run()`` semantics (see ``scoring/entry_script.py``): returns a
        JSON-serializable value or an ``EntryScriptResponse``. Raises InferenceFailed
        (the script raised), InvalidInput (schema parameters), Overloaded."""
        entry = self.entry
        if entry is None:
            raise InvalidInput("this model is not an entry script; use the inference protocol", field="model")
        if self._closed:
            raise ModelNotReady(self.metadata.id.name, self.metadata.id.version, "unloading")
        if self._batcher is not None and (request is None or entry.run_fn is None):
            bodies = np.empty(1, dtype=object)
            bodies[0] = body
            result = await self._batcher.submit({"body": bodies}, None, 1)
            return result.outputs["result"][0]
        value, _, _ = await self._bounded(lambda: entry.call(body, request))
        return value


def _rows(request: InferRequest) -> int:
    for array in request.inputs.values():
        shape: Any = getattr(array, "shape", ())
        return int(shape[0]) if shape else 1
    return 0


__all__ = ["Model"]
