"""benchmarks/locustfile.py cannot rot: a few seconds of headless locust through a real
router (key auth) in front of a real scoring server on the demo model, zero failures.

Both are started through the `infergate` command line, on 127.0.0.1, and always stopped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.example_inputs import bodies_from_metadata, nested
from benchmarks.procs import running_all
from benchmarks.setups import infergate_launch, router_key, router_launch

ROOT = Path(__file__).resolve().parents[2]


def test_nested_reshapes_row_major() -> None:
    assert nested([1, 2, 3, 4, 5, 6], [2, 3]) == [[1, 2, 3], [4, 5, 6]]
    assert nested([1, 2], [2]) == [1, 2]


def test_bodies_follow_the_metadata() -> None:
    v2, score = bodies_from_metadata({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]})
    (tensor,) = v2["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"], len(tensor["data"])) == ("x", [1, 3], "FP32", 3)
    assert score == {"data": [tensor["data"]]}
    v2, score = bodies_from_metadata({"inputs": [{"name": "a", "datatype": "INT64", "shape": [2]},
                                                 {"name": "b", "datatype": "BOOL", "shape": [1]}]})
    assert set(score) == {"a", "b"}
    assert all(isinstance(v, int) for v in v2["inputs"][0]["data"])


def _missing_commands() -> list[str]:
    return [m for m in ("server.__main__", "router.__main__", "scoring.model_zoo") if importlib.util.find_spec(m) is None]


@pytest.mark.e2e
@pytest.mark.skipif(bool(_missing_commands()), reason=f"infergate serve/route not on this branch yet: {_missing_commands()}")
def test_locust_headless_through_the_router_has_no_failures(tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    assert locust, "locust is in the test extra: pip install -e '.[test]'"
    repo = tmp_path / "repository"
    subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(repo), "demo"], check=True, capture_output=True)
    server, server_port = infergate_launch("locust-server", repo)
    token = secrets.token_urlsafe(24)
    router, port, admin_port = router_launch(tmp_path / "router", server_port, token, endpoint="demo")
    with running_all([server, router], tmp_path / "logs"):
        key = router_key(admin_port, token, endpoint="demo")
        env = dict(os.environ, INFERGATE_KEY=key, INFERGATE_ENDPOINT="demo", INFERGATE_MODEL="demo")
        done = subprocess.run(
            [locust, "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless", "-u", "2", "-r", "2",
             "-t", "3s", "--host", f"http://127.0.0.1:{port}", "--json", "--only-summary", "--loglevel", "WARNING"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stats = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert {"metadata", "v2 infer", "score"} <= set(stats), sorted(stats)
    for name in ("metadata", "v2 infer", "score"):
        assert stats[name]["num_requests"] > 0, name
        assert stats[name]["num_failures"] == 0, (name, done.stderr[-3000:])
