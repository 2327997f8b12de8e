"""The micro-batcher, driven through a fake runner with events and futures (no sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest

from scoring import BatchingConfig, DeadlineExceeded, InferenceFailed, ModelNotReady, Overloaded
from scoring.batcher import Batcher, share_rows, time_to_close
from scoring.batching import batch_key, merge, split
from scoring.types import InferResult

T = TypeVar("T")
Arrays = dict[str, np.ndarray]


class FakeRunner:
    """y = 2x per input; every call is recorded; calls can be held at a gate. With a
    ``bound``, at most that many calls compute at once and the others wait their turn, as
    an ONNX runner's pool of ``instance_count`` threads does (``handed``: every call made)."""

    def __init__(self) -> None:
        self.handed: list[Arrays] = []
        self.bound: asyncio.Semaphore | None = None
        self.calls: list[Arrays] = []
        self.gate: asyncio.Event | None = None  # set: calls proceed
        self.entered = asyncio.Queue[int]()  # one item per call that started
        self.active = 0
        self.max_active = 0
        self.fail_when: Callable[[Arrays], bool] = lambda _: False
        self.bad_rows = False

    async def run(self, inputs: Arrays, names: Sequence[str] | None) -> Arrays:
        self.handed.append(inputs)
        if self.bound is None:
            return await self._compute(inputs)
        async with self.bound:
            return await self._compute(inputs)

    async def _compute(self, inputs: Arrays) -> Arrays:
        self.calls.append(inputs)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.entered.put_nowait(len(self.calls))
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_when(inputs):
                raise ValueError("boom")
            out = {f"{k}_out": v * 2 for k, v in inputs.items()}
            if self.bad_rows:
                out = {k: v[:-1] for k, v in out.items()}
            return out
        finally:
            self.active -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def go(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


def rows(n: int, value: float = 1.0, width: int = 3, dtype: type = np.float32) -> Arrays:
    return {"x": np.full((n, width), value, dtype=dtype)}


def cfg(**kw: object) -> BatchingConfig:
    base: dict[str, object] = {"max_batch_size": 4, "max_queue_delay_ms": 10_000_000, "max_queue_size": 64}
    base.update(kw)
    return BatchingConfig(**base)  # type: ignore[arg-type]


def gated(
    clock: Clock | None = None, instance_count: int = 1, label: str = "model", **config: object
) -> tuple[Batcher, FakeRunner]:
    """A started Batcher over a FakeRunner whose calls wait at its gate (set it to let them
    finish); a batch closes as soon as an instance is free (max_queue_delay_ms 0)."""
    runner = FakeRunner()
    runner.gate = asyncio.Event()
    b = Batcher(runner.run, cfg(max_queue_delay_ms=0, **config), instance_count=instance_count, label=label,
                clock=clock or time.monotonic)  # fmt: skip
    b.start()
    return b, runner


async def started(b: Batcher, runner: FakeRunner, n: int = 1) -> None:
    for _ in range(n):
        await runner.entered.get()


def test_time_to_close_counts_from_the_oldest() -> None:
    assert time_to_close(oldest_arrived=10.0, rows=4, now=10.0, delay_s=0.5, target_rows=4) is None
    assert time_to_close(10.0, 3, now=10.2, delay_s=0.5, target_rows=4) == pytest.approx(0.3)
    assert time_to_close(10.0, 3, now=10.5, delay_s=0.5, target_rows=4) == pytest.approx(0.0)
    assert time_to_close(10.0, 1, now=11.0, delay_s=0.5, target_rows=4) < 0  # overdue: close now


def test_batch_closes_at_max_batch_size_with_multi_row_requests() -> None:
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=6), label="m")
        b.start()
        parts = [rows(1, 1), rows(3, 2), rows(2, 3)]
        results = await asyncio.gather(*(b.submit(p, None, len(p["x"])) for p in parts))
        assert len(runner.calls) == 1 and runner.calls[0]["x"].shape == (6, 3)
        for p, r in zip(parts, results, strict=True):
            np.testing.assert_array_equal(r.outputs["x_out"], p["x"] * 2)
            assert r.batch_rows == 6
        await b.close()

    go(body)


def test_batch_that_fills_while_the_collector_waits_goes_at_once() -> None:
    # The delay is ~3 hours (cfg): the batch can only go because the arrival that fills it
    # wakes the collector, which is already waiting on the head request's delay.
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=4), label="m")
        b.start()
        first = asyncio.ensure_future(b.submit(rows(1), None, 1))
        other_shape = asyncio.ensure_future(b.submit(rows(3, width=5), None, 3))
        for _ in range(5):
            await asyncio.sleep(0)  # the collector takes the head and waits on its delay
        assert runner.calls == [] and not first.done()
        rest = [b.submit(rows(1), None, 1) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(first, *rest), timeout=10)  # a hang guard only
        assert [c["x"].shape for c in runner.calls] == [(4, 3)]
        assert not other_shape.done()  # 3 rows of another shape: not full, still waiting
        other_shape.cancel()
        await b.close(timeout_s=0)

    go(body)


def test_partial_batch_goes_after_the_delay() -> None:
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=8, max_queue_delay_ms=1))
        b.start()
        results = await asyncio.gather(*(b.submit(rows(1, i), None, 1) for i in range(3)))
        assert [r.outputs["x_out"][0, 0] for r in results] == [0, 2, 4]
        assert [c["x"].shape[0] for c in runner.calls] == [3]
        await b.close()

    go(body)


def test_preferred_batch_size_closes_early() -> None:
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=8, preferred_batch_sizes=(2,)))
        b.start()
        await asyncio.gather(*(b.submit(rows(1), None, 1) for _ in range(4)))
        assert [c["x"].shape[0] for c in runner.calls] == [2, 2]
        await b.close()

    go(body)


def test_requests_of_different_shapes_or_dtypes_never_mix() -> None:
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=4, max_queue_delay_ms=0))
        b.start()
        parts = [rows(1, width=3), rows(1, width=5), rows(1, width=3), rows(1, dtype=np.float64), rows(1, width=5)]
        results = await asyncio.gather(*(b.submit(p, None, 1) for p in parts))
        for call in runner.calls:
            assert len({batch_key({"x": call["x"][i : i + 1]}) for i in range(len(call["x"]))}) == 1
        for p, r in zip(parts, results, strict=True):
            assert r.outputs["x_out"].dtype == p["x"].dtype
            np.testing.assert_array_equal(r.outputs["x_out"], p["x"] * 2)
        await b.close()

    go(body)


def test_queue_is_bounded_and_overload_is_immediate() -> None:
    async def body() -> None:
        b, runner = gated(max_batch_size=1, max_queue_size=2)
        first = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await started(b, runner)  # computing, out of the queue
        queued = [asyncio.ensure_future(b.submit(rows(1), None, 1)) for _ in range(2)]
        await asyncio.sleep(0)
        assert b.queue_depth() == 2
        with pytest.raises(Overloaded) as info:
            await b.submit(rows(1), None, 1)
        assert info.value.retry_after_s > 0
        runner.gate.set()
        await asyncio.gather(first, *queued)
        await b.close()

    go(body)


def test_deadline_expired_while_queued_is_not_computed() -> None:
    async def body() -> None:
        clock = Clock()
        b, runner = gated(clock=clock, max_batch_size=1)
        first = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await started(b, runner)
        # Deadline far ahead in real time, then the (fake) clock jumps past it.
        late = asyncio.ensure_future(b.submit(rows(1, 7), None, 1, deadline=clock.now + 1000))
        # And one whose deadline timer fires while it waits.
        now = asyncio.ensure_future(b.submit(rows(1, 8), None, 1, deadline=clock.now))
        with pytest.raises(DeadlineExceeded):
            await now
        clock.now += 2000
        runner.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await late
        assert all(c["x"][0, 0] not in (7, 8) for c in runner.calls)
        assert len(runner.calls) == 1
        await b.close()

    go(body)


def test_one_expiry_timer_answers_each_queued_deadline_in_turn() -> None:
    """The queue's single expiry timer re-arms for the next queued deadline after firing,
    and leaves requests without a deadline (or not yet due) queued."""

    async def body() -> None:
        clock = Clock()
        b, runner = gated(clock=clock, max_batch_size=1)
        first = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await started(b, runner)
        later = asyncio.ensure_future(b.submit(rows(1, 6), None, 1, deadline=clock.now + 0.02))
        no_deadline = asyncio.ensure_future(b.submit(rows(1, 5), None, 1))
        due = asyncio.ensure_future(b.submit(rows(1, 7), None, 1, deadline=clock.now))
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(due, 30)  # a hang guard, not a speed bound
        assert not later.done() and b.queue_depth() == 2
        clock.now += 1.0  # the re-armed timer finds `later` due when it fires
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(later, 30)
        assert b.queue_depth() == 1
        runner.gate.set()
        await asyncio.gather(first, no_deadline)
        assert all(c["x"][0, 0] not in (6, 7) for c in runner.calls)
        await b.close()

    go(body)


def test_a_deadline_passing_while_computing_is_answered_then_and_its_late_result_dropped() -> None:
    async def body() -> None:
        clock = Clock()
        b, runner = gated(clock=clock, max_batch_size=2)
        short = asyncio.ensure_future(b.submit(rows(1, 3), None, 1, deadline=clock.now + 0.02))
        long = asyncio.ensure_future(b.submit(rows(1, 4), None, 1, deadline=clock.now + 1000))
        await started(b, runner)  # one batch of both, held at the gate
        assert [c["x"].shape[0] for c in runner.calls] == [2]
        clock.now += 1.0  # past `short`'s deadline when its timer fires
        with pytest.raises(DeadlineExceeded, match="while computing"):
            await asyncio.wait_for(short, 30)  # a hang guard, not a speed bound
        assert not long.done()
        runner.gate.set()
        assert (await long).outputs["x_out"].tolist() == [[8.0, 8.0, 8.0]]
        await b.close()

    go(body)


def test_queue_timeout() -> None:
    async def body() -> None:
        clock = Clock()
        b, runner = gated(clock=clock, max_batch_size=1, queue_timeout_ms=60_000)
        first = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await started(b, runner)
        waiting = asyncio.ensure_future(b.submit(rows(1, 5), None, 1))
        await asyncio.sleep(0)
        clock.now += 61  # queued longer than queue_timeout_ms
        runner.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await waiting
        assert len(runner.calls) == 1
        await b.close()

    go(body)


def test_failing_batch_fails_only_its_requests() -> None:
    async def body() -> None:
        runner = FakeRunner()
        runner.fail_when = lambda inputs: bool((inputs["x"] == 13).any())
        b = Batcher(runner.run, cfg(max_batch_size=2, max_queue_delay_ms=0))
        b.start()
        bad = [b.submit(rows(1, 13), None, 1), b.submit(rows(1, 1), None, 1)]
        good = [b.submit(rows(1, 2), None, 1), b.submit(rows(1, 3), None, 1)]
        results = await asyncio.gather(*bad, *good, return_exceptions=True)
        assert [type(r) for r in results[:2]] == [InferenceFailed, InferenceFailed]
        assert "boom" in str(results[0])
        assert all(isinstance(r, InferResult) for r in results[2:])
        again = await b.submit(rows(1, 4), None, 1)  # still serving
        np.testing.assert_array_equal(again.outputs["x_out"], rows(1, 8)["x"])
        await b.close()

    go(body)


def test_output_rows_must_match_the_batch() -> None:
    async def body() -> None:
        runner = FakeRunner()
        runner.bad_rows = True
        b = Batcher(runner.run, cfg(max_batch_size=2, max_queue_delay_ms=0))
        b.start()
        results = await asyncio.gather(b.submit(rows(1), None, 1), b.submit(rows(1), None, 1), return_exceptions=True)
        assert all(isinstance(r, InferenceFailed) and "cannot be batched" in str(r) for r in results)
        await b.close()

    go(body)


def test_instance_count_runs_batches_concurrently() -> None:
    async def body() -> None:
        for instances in (1, 2):
            b, runner = gated(instance_count=instances, max_batch_size=1)
            tasks = [asyncio.ensure_future(b.submit(rows(1), None, 1)) for _ in range(3)]
            await started(b, runner, instances)
            for _ in range(3):
                await asyncio.sleep(0)  # give the collector every chance to start more
            assert runner.active == instances
            runner.gate.set()
            await asyncio.gather(*tasks)
            assert runner.max_active == instances
            await b.close()

    go(body)


def test_full_batches_are_formed_ahead_while_every_instance_is_busy() -> None:
    # staged=1: while the one instance computes, a batch that is already full is handed to
    # run at once (the instance starts it the moment it finishes, without waiting for the
    # loop); one that is not full stays queued, where it can still grow.
    async def body() -> None:
        clock = Clock()
        runner = FakeRunner()
        runner.gate, runner.bound = asyncio.Event(), asyncio.Semaphore(1)
        b = Batcher(runner.run, cfg(max_batch_size=2, max_queue_delay_ms=0), instance_count=1, clock=clock, staged=1)
        b.start()
        first = [asyncio.ensure_future(b.submit(rows(1, 1.0), None, 1)) for _ in range(2)]
        await asyncio.wait_for(started(b, runner), timeout=10)  # a hang guard only
        clock.now += 1.0
        ahead = [asyncio.ensure_future(b.submit(rows(1, 2.0), None, 1)) for _ in range(2)]
        late = asyncio.ensure_future(b.submit(rows(1, 3.0), None, 1))
        for _ in range(5):
            await asyncio.sleep(0)
        assert [c["x"][:, 0].tolist() for c in runner.handed] == [[1.0, 1.0], [2.0, 2.0]]
        assert runner.active == 1 and b.queue_depth() == 1
        clock.now += 4.0  # the first run returns now; the batch formed ahead starts in its place
        runner.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*first, *ahead, late), timeout=10)
        assert [r.outputs["x_out"][0, 0] for r in results] == [2.0, 2.0, 4.0, 4.0, 6.0]
        assert runner.max_active == 1
        # Timed from when it could start computing, not from when it was formed.
        assert results[2].queue_s == pytest.approx(4.0) and results[2].compute_s == pytest.approx(0.0)
        await b.close()

    go(body)


def test_share_rows_splits_only_worthwhile_shares() -> None:
    assert share_rows(64, free_instances=2, limit=256) == 32
    assert share_rows(65, free_instances=2, limit=256) == 33  # rounded up: no third batch
    assert share_rows(64, free_instances=1, limit=256) == 256  # one free: it takes what fits
    assert share_rows(40, free_instances=2, limit=256) == 256  # shares of 20: not worth it
    assert share_rows(600, free_instances=2, limit=256) == 256  # never above the limit


def test_free_instances_share_a_large_queue() -> None:
    # 80 rows queued while both instances are free: two batches of 40 run side by side,
    # instead of the first instance taking all that fits (60 rows) while the other idles.
    # A few rows are not split: 4 one-row requests still go as one batch.
    async def body() -> None:
        b, runner = gated(instance_count=2, label="m", max_batch_size=64)
        tasks = [asyncio.ensure_future(b.submit(rows(20, float(i)), None, 20)) for i in range(4)]
        await asyncio.wait_for(started(b, runner), timeout=10)  # a hang guard only
        for _ in range(5):
            await asyncio.sleep(0)  # give the collector every chance to start the second
        assert [c["x"].shape[0] for c in runner.calls] == [40, 40] and runner.active == 2
        runner.gate.set()
        results = await asyncio.gather(*tasks)
        for i, r in enumerate(results):
            np.testing.assert_array_equal(r.outputs["x_out"], rows(20, float(i))["x"] * 2)
        runner.calls.clear()
        await asyncio.gather(*(b.submit(rows(1), None, 1) for _ in range(4)))
        assert [c["x"].shape[0] for c in runner.calls] == [4]
        await b.close()

    go(body)


def test_requested_outputs_are_picked_per_request() -> None:
    async def body() -> None:
        runner = FakeRunner()
        b = Batcher(runner.run, cfg(max_batch_size=2, max_queue_delay_ms=0))
        b.start()
        two = {"x": np.ones((1, 3), np.float32), "z": np.ones((1, 3), np.float32)}
        r1, r2 = await asyncio.gather(b.submit(two, ("x_out",), 1), b.submit(dict(two), None, 1))
        assert set(r1.outputs) == {"x_out"} and set(r2.outputs) == {"x_out", "z_out"}
        await b.close()

    go(body)


def test_cancelled_request_is_not_computed_and_close_drains() -> None:
    async def body() -> None:
        b, runner = gated(max_batch_size=1)
        first = asyncio.ensure_future(b.submit(rows(1, 1), None, 1))
        await started(b, runner)
        gone = asyncio.ensure_future(b.submit(rows(1, 9), None, 1))
        kept = asyncio.ensure_future(b.submit(rows(1, 2), None, 1))
        await asyncio.sleep(0)
        gone.cancel()
        closing = asyncio.ensure_future(b.close())
        await asyncio.sleep(0)
        with pytest.raises(ModelNotReady):
            await b.submit(rows(1), None, 1)  # closing: no new work
        runner.gate.set()
        await closing
        assert (await kept).outputs["x_out"][0, 0] == 4 and (await first).outputs["x_out"][0, 0] == 2
        assert [c["x"][0, 0] for c in runner.calls] == [1, 2]

    go(body)


def test_merge_and_split() -> None:
    parts = [rows(2, 1), rows(1, 2)]
    merged = merge(parts)
    assert merged["x"].shape == (3, 3)
    back = split({"y": merged["x"]}, [2, 1])
    np.testing.assert_array_equal(back[0]["y"], parts[0]["x"])
    np.testing.assert_array_equal(back[1]["y"], parts[1]["x"])
    with pytest.raises(InferenceFailed):
        split({"y": np.ones(())}, [1])


def test_close_timeout_answers_everyone() -> None:
    async def body() -> None:
        b, runner = gated(max_batch_size=1)  # its gate is never set: the batch hangs
        computing = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await started(b, runner)
        queued = asyncio.ensure_future(b.submit(rows(1), None, 1))
        await asyncio.sleep(0)
        await b.close(timeout_s=0)
        for fut in (computing, queued):
            with pytest.raises(ModelNotReady):
                await fut

    go(body)
