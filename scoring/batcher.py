"""Dynamic micro-batcher: one bounded queue and one collector task per model version.

A batch closes when ``max_batch_size`` rows of compatible requests are queued (or the
largest of ``preferred_batch_sizes``), or ``max_queue_delay_ms`` after its oldest request
arrived (``time.monotonic``). It is concatenated along axis 0 and run as ONE runner call;
up to ``instance_count`` batches run at once. The collector only forms a batch once an
instance is free, so under load batches grow by themselves while the instances are busy.
When several instances are free at once, a large queue is shared out among them
(``share_rows``) rather than all given to the first: two half batches run side by side
instead of one full batch while the other instance idles.

With ``staged`` > 0 the collector also forms full batches ahead while every instance is
busy (at most ``staged`` of them), and hands them to ``run`` at once: an instance that
finishes starts the next batch straight away, in its own thread, instead of idling until
the event loop has answered the last batch and formed the next. Only a batch that is
already full is formed ahead (waiting longer could not make it larger), and only for a
``run`` that itself runs at most ``instance_count`` calls at once (an ONNX model's own
pool of ``instance_count`` threads); its requests count as dispatched from then on.

- Requests whose non-batch dims or dtypes differ never share a batch (``batch_key``).
- The queue holds at most ``max_queue_size`` requests; past it ``submit`` raises
  ``Overloaded`` at once, so memory stays bounded under any load.
- A request whose deadline (or ``queue_timeout_ms``) passes while queued is answered
  with ``DeadlineExceeded`` at that moment and never computed. One whose deadline passes
  while its batch computes is answered with ``DeadlineExceeded`` at that moment too (the
  batch runs on; its late result for that request is dropped). So ``submit`` returns by
  the request's deadline, and a caller needs no timer of its own.
- A batch whose run raises fails only its own requests; the collector keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from scoring.batching import AUTO_MIN_ROWS, Arrays, BatchKey, batch_key, merge, split
from scoring.config import BatchingConfig
from scoring.errors import DeadlineExceeded, InferenceFailed, ModelNotReady, Overloaded, ScoringError
from scoring.types import InferResult

log = logging.getLogger("infergate.scoring")

RunFn = Callable[[Arrays, Sequence[str] | None], Awaitable[Arrays]]
Clock = Callable[[], float]


@dataclass(eq=False, slots=True)
class _Pending:
    inputs: Arrays
    outputs: tuple[str, ...] | None
    rows: int
    key: BatchKey
    arrived: float
    deadline: float | None
    future: asyncio.Future[InferResult]


def time_to_close(oldest_arrived: float, rows: int, now: float, delay_s: float, target_rows: int) -> float | None:
    """When the batch headed by the oldest request closes: None (full) when ``rows``
    (queued rows compatible with it) reach ``target_rows``; else the seconds left of its
    delay, counted from when the OLDEST request arrived (<= 0: close now)."""
    if rows >= target_rows:
        return None
    return oldest_arrived + delay_s - now


# Shares smaller than this are not split off: each extra batch costs a thread hop and ONNX
# Runtime's cost per row climbs for small batches, so a few dozen rows run best together.
# (With 16, one-row HTTP traffic at c=64 kept splitting 32 queued rows into 16 + 16 and lost
# ~5% of its throughput; benchmarks/RESULTS.md.)
MIN_SHARE_ROWS = 32


def share_rows(queued_rows: int, free_instances: int, limit: int) -> int:
    """Rows the next batch may take: ``queued_rows`` split evenly over the free instances
    (rounded up), unless that makes shares under MIN_SHARE_ROWS; never more than ``limit``."""
    share = -(-queued_rows // max(1, free_instances))
    if free_instances <= 1 or share < MIN_SHARE_ROWS:
        return limit
    return min(limit, share)


class Batcher:
    """Queue requests for one model version and run them in batches through ``run``."""

    def __init__(
        self,
        run: RunFn,
        config: BatchingConfig,
        instance_count: int = 1,
        label: str = "model",
        clock: Clock = time.monotonic,
        staged: int = 0,
    ) -> None:
        self._run = run
        # The repository settles max_batch_size from the model's inputs; a bare config gets
        # the smallest automatic size.
        self._max_rows = config.rows_limit(AUTO_MIN_ROWS)
        self.config = replace(config, max_batch_size=self._max_rows)
        self.instance_count = instance_count
        self.label = label
        self._clock = clock
        self._delay_s = config.max_queue_delay_ms / 1000.0
        self._target = max(config.preferred_batch_sizes, default=self._max_rows)
        self._queue: deque[_Pending] = deque()
        self._key_rows: dict[BatchKey, int] = {}
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._staged = staged
        self._dispatched = 0  # batches handed to run: computing, or formed ahead (staged)
        # When each batch formed ahead started computing, oldest first: [dispatch time], raised
        # to the moment the loop sees a run return (that freed instance took the oldest one).
        self._ahead: deque[list[float]] = deque()
        self._running: dict[int, list[_Pending]] = {}  # dispatched batches by id, for the expiry timer
        self._collector: asyncio.Task[None] | None = None
        # One timer for the whole queue, due at the earliest deadline it may hold (math.inf:
        # none armed), rather than one TimerHandle per request: most requests carry a deadline
        # (the server's scoring timeout) and leave the queue long before it.
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf
        # Created in start(), inside the running loop (loop-bound objects).
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the collector task; call from inside the event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._collector = self._loop.create_task(self._collect(), name=f"batcher {self.label}")

    def queue_depth(self) -> int:
        """Requests queued and not yet dispatched."""
        return len(self._queue)

    async def submit(
        self,
        inputs: Arrays,
        outputs: tuple[str, ...] | None,
        rows: int,
        deadline: float | None = None,
        key: BatchKey | None = None,
    ) -> InferResult:
        """Queue one (already validated) request of ``rows`` rows; wait for its result.
        ``key`` is its ``batch_key`` when the caller computed it already."""
        if self._loop is None or self._wakeup is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._closing:
            raise ModelNotReady(self.label, None, "unloading")
        if len(self._queue) >= self.config.max_queue_size:
            raise Overloaded(
                f"{self.label}: {len(self._queue)} requests queued (max_queue_size); try again later",
                retry_after_s=1.0,
            )
        now = self._clock()
        if self.config.queue_timeout_ms is not None:
            timeout_at = now + self.config.queue_timeout_ms / 1000.0
            deadline = timeout_at if deadline is None else min(deadline, timeout_at)
        if key is None:
            key = batch_key(inputs)
        item = _Pending(inputs, outputs, rows, key, now, deadline, self._loop.create_future())
        queue = self._queue
        queue.append(item)
        if deadline is not None and deadline < self._expiry_at:
            self._arm_expiry(deadline, now)
        key_rows = self._key_rows[key] = self._key_rows.get(key, 0) + rows
        # Wake the collector only when the arrival changes what it waits for: an empty queue
        # got its first request, or the head's batch just filled. Otherwise it is waiting for
        # the head's delay (or for a free instance) and would only re-arm the same timer.
        if len(queue) == 1 or (key_rows >= self._target and queue[0].key == key):
            self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # The caller went away (client disconnected): do not compute it.
            self._discard(item)
            raise

    def stop_accepting(self) -> None:
        """New submissions fail with ModelNotReady; what is queued still runs."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests; dispatch what is queued at once and wait for it (bounded).

        Whatever is still queued or computing after ``timeout_s`` fails with ModelNotReady.
        """
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        pending = [t for t in [self._collector, *self._tasks] if t is not None]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout_s)
            for task in still:
                task.cancel()
        while self._queue:
            item = self._queue.popleft()
            self._fail(item, ModelNotReady(self.label, None, "unloaded before it was computed"))
        self._key_rows.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry, self._expiry_at = None, math.inf

    # ------------------------------------------------------------------ internals

    def _discard(self, item: _Pending) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            return  # already dispatched
        self._forget(item)

    def _forget(self, item: _Pending) -> None:
        left = self._key_rows[item.key] - item.rows
        if left:
            self._key_rows[item.key] = left
        else:
            del self._key_rows[item.key]

    def _arm_expiry(self, deadline: float, now: float) -> None:
        assert self._loop is not None
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = deadline
        self._expiry = self._loop.call_later(max(0.0, deadline - now), self._expire_due)

    def _expire_due(self) -> None:
        """Timer callback: answer every request whose deadline passed, queued (it is never
        computed) or computing (its batch runs on; the late result is dropped), then re-arm
        for the earliest deadline still pending."""
        self._expiry, self._expiry_at = None, math.inf
        now = self._clock()
        expired: list[_Pending] = []
        next_at = math.inf
        for item in self._queue:
            deadline = item.deadline
            if deadline is not None:
                if now >= deadline:
                    expired.append(item)
                elif deadline < next_at:
                    next_at = deadline
        if expired:
            gone = set(map(id, expired))
            self._queue = deque(item for item in self._queue if id(item) not in gone)
            for item in expired:
                self._forget(item)
                self._fail(item, DeadlineExceeded(f"{self.label}: deadline passed while queued"))
        for batch in self._running.values():
            for item in batch:
                deadline = item.deadline
                if deadline is None or item.future.done():
                    continue
                if now >= deadline:
                    self._fail(item, DeadlineExceeded(f"{self.label}: deadline passed while computing"))
                elif deadline < next_at:
                    next_at = deadline
        if next_at < math.inf:
            self._arm_expiry(next_at, now)

    @staticmethod
    def _fail(item: _Pending, exc: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(exc)

    async def _collect(self) -> None:
        assert self._wakeup is not None and self._loop is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._sleep()
                continue
            if self._dispatched < self.instance_count:  # an instance is free
                limit = await self._wait_for_batch()
                if self._queue:
                    queued = self._key_rows.get(self._queue[0].key, 0)
                    limit = share_rows(queued, self.instance_count - self._dispatched, limit)
            elif self._dispatched < self.instance_count + self._staged and self._head_full():
                limit = self._target  # form it ahead: it is as large as it gets
            else:
                await self._sleep()  # until a batch finishes or the head's batch fills
                continue
            batch = self._take(limit)
            if not batch:
                continue
            start = [self._clock()]
            if self._dispatched >= self.instance_count:
                self._ahead.append(start)
            self._dispatched += 1
            task = self._loop.create_task(self._execute(batch, start))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sleep(self) -> None:
        """Wait for the next wake-up: an arrival that matters, a finished batch, closing."""
        assert self._wakeup is not None
        self._wakeup.clear()
        await self._wakeup.wait()

    def _head_full(self) -> bool:
        return self._key_rows.get(self._queue[0].key, 0) >= self._target

    async def _wait_for_batch(self) -> int:
        """Wait until the head request's batch is full or its delay is over; return the
        row limit for the batch to take."""
        assert self._wakeup is not None and self._loop is not None
        while self._queue and not self._closing:
            head = self._queue[0]
            wait_s = time_to_close(
                head.arrived, self._key_rows.get(head.key, 0), self._clock(), self._delay_s, self._target
            )
            if wait_s is None:
                return self._target
            if wait_s <= 0:
                break
            self._wakeup.clear()
            timer = self._loop.call_later(wait_s, self._wakeup.set)
            try:
                await self._wakeup.wait()  # a new arrival, or the delay is over
            finally:
                timer.cancel()
        return self._max_rows

    def _take(self, limit: int) -> list[_Pending]:
        """Take the head request and the compatible ones after it, oldest first, up to
        ``limit`` rows (a larger single request goes alone). Expired ones are answered."""
        now = self._clock()
        batch: list[_Pending] = []
        rows = 0
        key: BatchKey | None = None
        keep: deque[_Pending] = deque()
        queue = self._queue
        while queue:
            item = queue.popleft()
            if item.future.done():  # cancelled by its caller
                self._forget(item)
                continue
            if item.deadline is not None and now >= item.deadline:
                self._forget(item)
                self._fail(item, DeadlineExceeded(f"{self.label}: deadline passed while queued"))
                continue
            if key is None:
                key = item.key
            if item.key != key or (batch and rows + item.rows > limit):
                keep.append(item)
                if rows >= limit:
                    break
                continue
            batch.append(item)
            rows += item.rows
            self._forget(item)
            if rows >= limit:
                break
        if keep:
            keep.extend(queue)
            self._queue = keep
        return batch

    def _run_returned(self) -> float:
        """A run returned (or raised): its instance took the oldest batch formed ahead."""
        now = self._clock()
        if self._ahead:
            start = self._ahead.popleft()
            start[0] = max(start[0], now)
        return now

    async def _execute(self, batch: list[_Pending], start: list[float]) -> None:
        assert self._wakeup is not None
        self._running[id(batch)] = batch
        try:
            rows = [item.rows for item in batch]
            wanted: set[str] | None = set()
            for item in batch:
                if item.outputs is None:
                    wanted = None
                    break
                assert wanted is not None
                wanted.update(item.outputs)
            names = None if wanted is None else sorted(wanted)
            try:
                merged = merge([item.inputs for item in batch])
                try:
                    outputs = await self._run(merged, names)
                finally:
                    done = self._run_returned()
                pieces = split(outputs, rows, self.label)
            except ScoringError as exc:
                for item in batch:
                    self._fail(item, exc)
                return
            except asyncio.CancelledError:  # close() gave up waiting: answer, then stop
                for item in batch:
                    self._fail(item, ModelNotReady(self.label, None, "unloaded while computing"))
                raise
            except Exception as exc:  # a runner that does not translate its errors
                log.exception("%s: batch of %d rows failed", self.label, sum(rows))
                failure = InferenceFailed(f"{self.label}: {exc}")
                failure.__cause__ = exc
                for item in batch:
                    self._fail(item, failure)
                return
            total = sum(rows)
            started = start[0]
            for item, piece in zip(batch, pieces, strict=True):
                if item.future.done():
                    continue
                if item.outputs is not None:
                    piece = {name: piece[name] for name in item.outputs}
                item.future.set_result(
                    InferResult(piece, queue_s=started - item.arrived, compute_s=done - started, batch_rows=total)
                )
        finally:
            del self._running[id(batch)]
            self._dispatched -= 1
            self._wakeup.set()


__all__ = ["Batcher", "share_rows"]
