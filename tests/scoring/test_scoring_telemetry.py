"""ONNX Runtime's usage telemetry is off unless the operator asks for it, and the router
(which only uses scoring's config and error types) never loads ONNX Runtime at all.

Each case runs in a fresh interpreter: ONNX Runtime reads ORT_DISABLE_TELEMETRY once, when
it initializes, and this test process has loaded it long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCORE = """
import os, sys
from scoring import ModelRepository  # loads ONNX Runtime
assert "onnxruntime" in sys.modules
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_telemetry_is_off_by_default_before_onnxruntime_loads() -> None:
    assert _python(_SCORE) == "1"


def test_an_operator_setting_is_kept() -> None:
    assert _python(_SCORE, ORT_DISABLE_TELEMETRY="0") == "0"


def test_the_router_never_loads_onnxruntime() -> None:
    code = "import sys, router.__main__, router.app, router.lifespan\nprint('onnxruntime' in sys.modules)"
    assert _python(code) == "False"
