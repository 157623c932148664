"""A real `nlpipe serve` in a subprocess on 127.0.0.1 for tests, and small HTTP helpers (urllib only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None,
            timeout: float = 60) -> tuple[int, Any]:
    """(status, decoded JSON body) for one HTTP request; error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw)


def post_json(url: str, value: Any, timeout: float = 60) -> tuple[int, Any]:
    return request(url, json.dumps(value).encode(), {"Content-Type": "application/json"}, timeout=timeout)


class ServerProcess:
    """``nlpipe serve RUN_DIR`` in a subprocess on 127.0.0.1, stopped on exit (used as a context manager)."""

    def __init__(self, run_dir: Path, log_path: Path, *args: str, ignore_sigint: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nlpipe", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(self.port),
             *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
            # As a server started in the background of a script (no job control) inherits it.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, body = request(self.url + "/health", timeout=5)
                if status == 200:
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"server not healthy after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
