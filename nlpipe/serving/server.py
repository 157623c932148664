"""Start the server: load the model, bind the socket, run uvicorn until Ctrl-C."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from ..errors import NlpipeError
from .app import ServeLimits, create_app, run_metadata
from .predictors import TASK_ENDPOINTS, load_predictor


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one).

    Raises:
        NlpipeError: the address cannot be used (port taken, unknown host, no permission).
    """
    if not 0 <= port <= 65535:
        raise NlpipeError(f"--port {port}: choose a port from 0 to 65535 (0: any free port)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise NlpipeError(f"--host {host}: cannot resolve it ({exc.strerror}); use an address such as 127.0.0.1") from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise NlpipeError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                          "choose another --port") from exc
    sock.set_inheritable(True)
    return sock


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, onnx: bool = False,
          limits: ServeLimits | None = None, log_level: str = "info") -> None:
    """Serve a run folder's model over HTTP until interrupted (what ``nlpipe serve`` calls).

    The port is bound first and the model loaded before anything is printed as ready, so a taken port or
    a bad folder fails at once with an `NlpipeError`.
    """
    import uvicorn

    limits = limits or ServeLimits()
    sock = bind_socket(host, port)
    try:
        predictor = load_predictor(run_dir, onnx=onnx, batch_size=limits.max_batch_size)
        # A run folder's card metadata; an ONNX predictor adds its export's (and alone describes an export folder).
        metadata = run_metadata(run_dir) if (Path(run_dir) / "recipe.yaml").is_file() else {}
        metadata = {**(getattr(predictor, "metadata", None) or {}), **metadata}
        app = create_app(predictor, metadata or None, limits)
    except BaseException:
        sock.close()
        raise
    address = sock.getsockname()
    shown_host = f"[{address[0]}]" if ":" in address[0] else address[0]
    backend = getattr(predictor, "backend", "pytorch")
    print(f"serving {run_dir} ({predictor.task}, {backend}) at http://{shown_host}:{address[1]}  "
          f"(page: /ui, API: POST /{TASK_ENDPOINTS[predictor.task]}, /health; Ctrl-C stops)", flush=True)
    if address[0] not in ("127.0.0.1", "::1"):
        print("note: the server has no authentication; anyone who can reach this address can use the model",
              flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    with _SignalsAfterShutdown(server):
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()


class _SignalsAfterShutdown:
    """Ctrl-C / SIGTERM end the process the usual way (exit 130 / 143) *after* uvicorn's graceful shutdown.

    uvicorn catches the signal, shuts down, then raises it again into the handler it found. Left to asyncio,
    that handler is asyncio's own SIGINT handler, which cancels the server task — and when the task is already
    finishing the cancellation is lost and the process exits 0 (seen under load). So a handler that only
    records the signal (and asks the server to stop, should it come before uvicorn listens) is installed
    around the run, and once the normal handlers are back the process ends as Ctrl-C (KeyboardInterrupt)
    or SIGTERM (the CLI's handler) would end it.
    """

    def __init__(self, server: object) -> None:
        self.server, self.received, self.previous = server, [], {}

    def _record(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        self.server.should_exit = True

    def __enter__(self) -> _SignalsAfterShutdown:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._record) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc[0] is not None:
            return
        if signal.SIGINT in self.received:
            # Not re-raised: a process started with SIGINT ignored (`nohup … &` in a script, some CI runners)
            # would swallow it, yet uvicorn has already stopped on it.
            raise KeyboardInterrupt
        if signal.SIGTERM in self.received:
            if callable(self.previous.get(signal.SIGTERM)):
                signal.raise_signal(signal.SIGTERM)  # the CLI's handler: one line, exit 143
            raise SystemExit(143)


__all__ = ["serve", "bind_socket"]
