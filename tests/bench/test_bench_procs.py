"""benchmarks/procs.py: servers start in their own process group, are polled until ready
and are always stopped, children included."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from benchmarks.procs import Launch, ServerStartError, free_port, http_get, running

# A parent that forks a child which would otherwise outlive it, then serves HTTP.
FORKING_SERVER = """
import http.server, os, sys, time
port = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    time.sleep(600)
    os._exit(0)
open(sys.argv[2], "w").write(str(pid))
http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_running_waits_for_ready_and_stops_the_whole_group(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(FORKING_SERVER)
    child_file = tmp_path / "child.pid"
    launch = Launch("forking", (sys.executable, str(script), str(port), str(child_file)),
                    ready_url=f"http://127.0.0.1:{port}/", cwd=tmp_path, ready_timeout_s=60)
    with running(launch, tmp_path / "logs") as proc:
        assert http_get(f"http://127.0.0.1:{port}/")[0] == 200
        child = int(child_file.read_text())
        assert _alive(child)
    assert proc.poll() is not None
    assert not _alive(child)
    assert http_get(f"http://127.0.0.1:{port}/", timeout_s=1)[0] == 0


def test_a_server_that_exits_early_is_a_start_error_with_its_log(tmp_path: Path) -> None:
    launch = Launch("broken", (sys.executable, "-c", "print('bad flag --nope'); raise SystemExit(3)"),
                    ready_url=f"http://127.0.0.1:{free_port()}/", ready_timeout_s=60)
    with pytest.raises(ServerStartError, match=r"(?s)exited with 3.*bad flag --nope"):
        with running(launch, tmp_path / "logs"):
            pass
