"""benchmarks/run.py: what the quick and full runs measure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import payloads
from benchmarks.run import make_plan, measure_setup, protocols_for, rows_for
from benchmarks.setups import Setup, default_setups


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
    floor = next(s for s in plan.setups if s.name == "floor-starlette")
    assert floor.models == ("tiny",)  # its echo is as large as tiny's answer only


def test_quick_run_is_smaller_but_keeps_the_headline_concurrency() -> None:
    plan = make_plan(quick=True)
    assert plan.concurrency == (64,)  # the targets' concurrency: about 2.5 minutes in all
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


def test_a_setup_limited_to_some_models_is_not_started_for_the_others(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(tmp_path), "tiny"], check=True, capture_output=True)
    tiny = payloads.read_model_info("tiny", tmp_path / "tiny" / "1" / "model.onnx")
    setup = Setup("floor-starlette", "floor", ("v2-json",), models=("mlp",))
    commands: list[str] = []
    measured = measure_setup(setup, {"tiny": tiny}, make_plan(quick=True), tmp_path / "work", tmp_path / "logs", commands)
    assert measured == [] and commands == []
    assert not (tmp_path / "work").exists()  # nothing was written for it, let alone started
