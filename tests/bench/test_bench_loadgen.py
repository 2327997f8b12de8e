"""benchmarks/loadgen.py: the wrk script, the report parser, and (with wrk installed) that a
server answering errors is reported as erroring, never as fast."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.loadgen import REPORT_MARKER, LoadgenError, LoadSpec, parse_report, render_lua, run_load, wrk_command


def _report(**overrides: object) -> str:
    data: dict[str, object] = {
        "requests": 1000, "duration_us": 2_000_000, "bytes": 50_000, "non2xx": 0, "last_bad_status": 0,
        "connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0,
        "p50_us": 1500.0, "p90_us": 2500.0, "p99_us": 9000.0, "mean_us": 1700.0, "max_us": 12000.0,
    }
    data.update(overrides)
    return "Running 2s test @ http://127.0.0.1:1/\n" + REPORT_MARKER + json.dumps(data) + "\nmore text\n"


def test_parse_report_converts_units_and_rates() -> None:
    result = parse_report(_report(), connections=8)
    assert result.requests == 1000
    assert result.duration_s == 2.0
    assert result.rps == 500.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (1.5, 2.5, 9.0)
    assert result.errors == 0
    assert result.connections == 8


def test_non_2xx_responses_do_not_count_as_throughput() -> None:
    result = parse_report(_report(non2xx=400, last_bad_status=503), connections=1)
    assert result.rps == 300.0
    assert result.errors == 400
    assert result.last_bad_status == 503
    assert result.error_rate == 0.4


def test_socket_errors_are_errors() -> None:
    result = parse_report(_report(connect=1, read=2, write=3, timeout=4), connections=1)
    assert result.socket_errors == 10
    assert result.errors == 10


def test_missing_report_is_an_error_with_wrks_output() -> None:
    with pytest.raises(LoadgenError, match="unable to connect"):
        parse_report("unable to connect to 127.0.0.1:1 Connection refused\n", connections=1)


def test_lua_script_sets_method_headers_and_reads_the_body_file(tmp_path: Path) -> None:
    script = render_lua("POST", (("Content-Type", "application/json"), ("Authorization", 'Bearer a"b\\c')), tmp_path / "body.bin")
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert 'wrk.headers["Authorization"] = "Bearer a\\"b\\\\c"' in script
    assert f'io.open("{tmp_path / "body.bin"}", "rb")' in script
    assert "function response(status, headers, body)" in script
    assert REPORT_MARKER in script


def test_lua_script_without_body_reads_no_file() -> None:
    assert "io.open" not in render_lua("GET", (), None)


def test_wrk_command_clamps_threads_and_uses_warmup_duration(tmp_path: Path) -> None:
    spec = LoadSpec(url="http://127.0.0.1:9/x", connections=1, threads=4, duration_s=10)
    argv = wrk_command("wrk", spec, tmp_path / "s.lua", duration_s=2)
    assert argv[:5] == ["wrk", "-t1", "-c1", "-d2s", "--timeout=10s"]
    assert argv[-1] == "http://127.0.0.1:9/x"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"connections": 0}, "connections"), ({"threads": 0}, "threads"), ({"duration_s": 0}, "duration_s"),
     ({"url": "http://10.0.0.1/"}, "url")],
)
def test_load_spec_rejects_bad_values_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:1/"} | kwargs
    with pytest.raises(ValueError, match=field):
        LoadSpec(**args)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = 200 if self.path == "/ok" else 500
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


@needs_wrk
def test_a_server_answering_500_is_reported_as_erroring(http_server: str) -> None:
    result = run_load(LoadSpec(url=f"{http_server}/fail", body=b'{"a":1}', connections=2, duration_s=1))
    assert result.requests > 0
    assert result.non_2xx == result.requests
    assert result.last_bad_status == 500
    assert result.rps == 0.0


@needs_wrk
def test_a_server_answering_200_is_measured(http_server: str) -> None:
    result = run_load(LoadSpec(url=f"{http_server}/ok", body=b"\x00\x01binary", connections=2, duration_s=1))
    assert result.requests > 0
    assert result.errors == 0
    assert result.rps > 0
    assert 0 < result.p50_ms <= result.p99_ms
