"""`nlpipe serve` as a command: one-line errors for what cannot be served, a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import ServerProcess, post_json


def serve_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlpipe", "serve", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_missing_run_folder(tmp_path: Path) -> None:
    assert_one_line_error(serve_command(str(tmp_path / "nope"), "--port", "0"), "no such run folder")


def test_taken_port(ner_run: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        assert_one_line_error(serve_command(str(ner_run), "--port", port), f"--port {port}", "choose another --port")


@pytest.mark.parametrize(("stop", "exit_code", "ignore_sigint"), [
    (signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
    ids=["ctrl-c", "sigterm", "ctrl-c-with-sigint-ignored-by-the-parent"])
def test_ctrl_c_stops_the_server_cleanly(ner_run: Path, tmp_path: Path, stop: int, exit_code: int,
                                         ignore_sigint: bool) -> None:
    server = ServerProcess(ner_run, tmp_path / "server.log", ignore_sigint=ignore_sigint)
    with server:
        status, body = post_json(server.url + "/entities", {"texts": ["Peter Blackburn met EU officials ."]})
        assert status == 200 and len(body["results"]) == 1
        server.process.send_signal(stop)
        # uvicorn shuts down gracefully, then the signal ends the process with the CLI's exit code, also when
        # the server was started with SIGINT ignored (a background job of a script: the suite failed that way)
        assert server.process.wait(timeout=30) == exit_code, server.log()
    assert "Application shutdown complete" in server.log() and "Traceback" not in server.log()
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "70000"], ["--port 70000", "0 to 65535"]),
    (["--max-texts", "0"], ["--max-texts 0", "at least 1"]),
], ids=["port-out-of-range", "max-texts-zero"])
def test_bad_option_values(tmp_path: Path, args: list[str], words: list[str]) -> None:
    assert_one_line_error(serve_command(str(tmp_path), *args), *words)
