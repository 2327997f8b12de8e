"""benchmarks/run.py: what the quick and full runs measure."""

from __future__ import annotations

from benchmarks.run import make_plan, protocols_for, rows_for
from benchmarks.setups import default_setups


def test_full_run_covers_every_server_and_concurrency() -> None:
    plan = make_plan(quick=False)
    assert plan.concurrency == (1, 8, 32, 64, 128)
    names = {s.name for s in plan.setups}
    assert {"null-starlette", "floor-starlette", "floor-inline", "infergate", "infergate-nobatch",
            "infergate-router", "infergate-w2", "azureml-w1", "azureml-w2", "mlserver", "pytriton", "kserve"} <= names
    infergate = next(s for s in plan.setups if s.name == "infergate")
    assert infergate.protocols == ("v2-json", "v2-binary", "score")
    assert rows_for(infergate, "mlp", quick=False) == (1, 32)
    assert rows_for(infergate, "tiny", quick=False) == (1,)


def test_quick_run_is_smaller_but_keeps_the_headline_concurrency() -> None:
    plan = make_plan(quick=True)
    assert 64 in plan.concurrency
    assert len(plan.setups) < len(make_plan(quick=False).setups)
    mlserver = next(s for s in plan.setups if s.name == "mlserver")
    assert rows_for(mlserver, "mlp", quick=True) == (1,)
    infergate = next(s for s in plan.setups if s.name == "infergate")
    assert rows_for(infergate, "mlp", quick=True) == (1, 32)
    assert protocols_for(infergate, 32, quick=True) == ("v2-json", "v2-binary")


def test_only_filters_setups_and_overrides_apply() -> None:
    plan = make_plan(quick=True, only=["azureml", "null"], concurrency=[4], duration_s=1.0)
    assert [s.name for s in plan.setups] == ["null-starlette", "azureml-w2"]
    assert plan.concurrency == (4,)
    assert plan.duration_s == 1.0


def test_each_setup_is_grouped_as_ours_peer_or_reference() -> None:
    for setup in default_setups(quick=False):
        if setup.kind in ("infergate", "router"):
            assert setup.group == "infergate"
        elif setup.kind in ("null", "floor", "floor-inline"):
            assert setup.group == "reference"
        else:
            assert setup.group == "peer"
