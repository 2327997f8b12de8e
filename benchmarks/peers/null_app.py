"""The null reference: a bare Starlette app under uvicorn (uvloop + httptools, no access
log) that reads the request body and answers a fixed JSON without computing anything. It
is what one Python process costs per request before any model work: the ceiling an
overhead-bound model is compared against. Runs from the project's own environment."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.procs import Launch

APP = '''\
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"outputs":[]}'


async def infer(request):
    await request.body()
    return Response(BODY, media_type="application/json")


async def ready(request):
    return Response(b"ok")


app = Starlette(routes=[
    Route("/infer", infer, methods=["POST"]),
    Route("/ready", ready),
])
'''


def launch(workdir: Path, port: int, python: Path | None = None) -> Launch:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "null_app.py").write_text(APP)
    return uvicorn_launch("null-starlette", "null_app", workdir, port, python)


def uvicorn_launch(
    name: str, module: str, workdir: Path, port: int, python: Path | None = None, env: dict[str, str] | None = None
) -> Launch:
    """``<module>:app`` from ``workdir`` under uvicorn as the references all run: uvloop,
    httptools, no access log (the floor apps share it, so that only the handler differs)."""
    return Launch(
        name=name,
        argv=(
            str(python or Path(sys.executable)), "-m", "uvicorn", f"{module}:app",
            "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ),
        ready_url=f"http://127.0.0.1:{port}/ready",
        cwd=workdir,
        env={"PYTHONPATH": str(workdir), **(env or {})},
    )
