"""``infergate route``: exit codes, and a real process with SIGHUP reload and SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from router_testkit import ADMIN_TOKEN, endpoint, run, upstreams, version, write_config

from router.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_invalid_config_exits_non_zero_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, [endpoint("svc", [version("va", "http://127.0.0.1:1", pct=101, default=True)])])
    assert main(["--config", str(path), "--state-dir", str(tmp_path / "s")]) == 2
    assert "endpoints[0].versions[0].traffic_percentile: must be between 0 and 100, got 101" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_port_in_use_exits_non_zero_naming_the_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, [endpoint("svc", [version("va", "http://127.0.0.1:1", default=True)])])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (["--port", str(port), "--admin-port", "0"], ["--port", "0", "--admin-port", str(port)]):
            assert main(["--config", str(path), "--state-dir", str(tmp_path / "s"), *flags]) == 1
            assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_sighup_during_start_up_does_not_kill_the_router(tmp_path: Path) -> None:
    # SIGHUP's default action ends a process: the reload handler must be in place before
    # the ports take connections. Sent the moment the admin port first accepts one.
    async def scenario() -> None:
        path = write_config(tmp_path, [endpoint("svc", [version("va", "http://127.0.0.1:1", default=True)], auth_enabled=False)])
        port, admin_port = _free_port(), _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "route", "--config", str(path),
            "--port", str(port), "--admin-port", str(admin_port), "--state-dir", str(tmp_path / "state"),
            cwd=ROOT, env={"INFERGATE_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", admin_port)
                    writer.close()
                    break
                except OSError:
                    assert proc.returncode is None and loop.time() < deadline
                    await asyncio.sleep(0.001)
            proc.send_signal(signal.SIGHUP)
            async with aiohttp.ClientSession() as session:
                while True:
                    try:
                        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
                            if 'infergate_router_config_reloads_total{result="applied"} 1.0' in await r.text():
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert proc.returncode is None and loop.time() < deadline
                    await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(scenario())


def test_router_process_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            path = write_config(tmp_path, [endpoint("svc", [version("va", a, default=True)], auth_enabled=False)])
            port, admin_port = _free_port(), _free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", "route", "--config", str(path),
                "--port", str(port), "--admin-port", str(admin_port), "--state-dir", str(tmp_path / "state"),
                cwd=ROOT, env={"INFERGATE_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}/api/v1/service/svc/score"
            try:
                async with aiohttp.ClientSession() as session:
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 30
                    while True:
                        try:
                            async with session.get(f"http://127.0.0.1:{admin_port}/healthz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientConnectionError:
                            pass
                        assert proc.returncode is None and loop.time() < deadline
                        await asyncio.sleep(0.05)

                    async def served_by() -> str:
                        async with session.post(url) as r:
                            assert r.status == 200
                            return r.headers["azureml-model-deployment"]

                    assert await served_by() == "va"
                    path.write_text("endpoints: [{name: svc, versions: []}]\n")
                    proc.send_signal(signal.SIGHUP)
                    while True:  # the rejection is counted before the next file is written
                        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
                            if 'infergate_router_config_reloads_total{result="rejected"} 1.0' in await r.text():
                                break
                        assert loop.time() < deadline
                        await asyncio.sleep(0.02)
                    assert await served_by() == "va"
                    path.write_text(yaml.safe_dump({"endpoints": [endpoint("svc", [version("vb", b, default=True)], auth_enabled=False)]}))
                    proc.send_signal(signal.SIGHUP)
                    names: list[str] = []

                    async def poll() -> None:
                        names.append(await served_by())

                    while not names or names[-1] != "vb":
                        assert loop.time() < deadline
                        await poll()
                    proc.send_signal(signal.SIGTERM)
                    assert await asyncio.wait_for(proc.wait(), 30) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            out = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
            assert "config reload rejected" in out and "endpoints[0].versions: must have 1 to 6 versions" in out
            assert '"message":"router stopped"' in out

    run(scenario())


