"""The API server: uvicorn serving the FastAPI app on the event loop it is started from (the
TUI's, or `sage-tui serve`'s), beside the engine it answers with.

The socket is bound here before uvicorn starts, so a port in use is a clear error (and port 0
gets a free port, read back as :attr:`ApiServer.port`). uvicorn's own signal handling is left
out (the front end owns SIGINT and SIGTERM), and so are its console logs: the TUI owns the
terminal. Its errors, and one line per request (route, model, status, tokens, seconds; never
a header, so never the key), go to `$SAGE_HOME/logs/api.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from sage_tui.api.app import create_app
from sage_tui.core.engines.reply import ReplyStats
from sage_tui.core.private_files import private_dirs, private_open
from sage_tui.errors import SageError
from sage_tui.studio.serving import LOOPBACK, ServeDesk

STARTUP_SECONDS = 10.0
STOP_SECONDS = 5.0
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class ApiServer:
    """One uvicorn server over one studio; :meth:`start` returns once it accepts requests."""

    def __init__(
        self, desk: ServeDesk, host: str, port: int, key: str, log_path: Path | None = None
    ) -> None:
        self._desk, self.host, self.port, self._key = desk, host, port, key
        self._log_path = log_path or desk.paths.api_log
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._log: logging.Logger | None = None

    async def start(self) -> None:
        """Bind, then serve in a task on this loop; SageError if the port cannot be had."""
        sock = _bound(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._log = await asyncio.to_thread(_file_logger, self._log_path)
        app = create_app(self._desk, self._key, self._request_line)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(STOP_SECONDS),
        )
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.ensure_future(server.serve(sockets=[sock]))
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                sock.close()
                why = _why(self._task)
                raise SageError(f"the API server did not start on {self.host}:{self.port}: {why}")
            await asyncio.sleep(0.02)
        self._log.info("serving on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting requests, let those in flight end (a few seconds at most)."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_SECONDS + 2)
        except asyncio.TimeoutError:
            server.force_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)
        except Exception:  # a server that failed on its own: nothing is left to stop
            pass
        recording = list(server.config.app.state.recording)
        if recording:  # the last requests' figures are kept before it says it stopped
            await asyncio.wait(recording, timeout=STOP_SECONDS)
        if self._log is not None:
            self._log.info("stopped serving on %s:%d", self.host, self.port)
            for handler in self._log.handlers:
                handler.close()

    def _request_line(
        self, route: str, model: str, status: int, stats: ReplyStats | None, seconds: float
    ) -> None:
        if self._log is None:
            return
        tokens = (
            f" prompt={stats.prompt_tokens} completion={stats.completion_tokens}"
            if stats is not None
            else ""
        )
        self._log.info(
            "%s model=%s status=%d%s %.3fs", route, model or "-", status, tokens, seconds
        )


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise SageError(
                f"port {port} on {host} is in use: stop what listens there, or choose"
                " another with --port"
            ) from None
        raise SageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _why(task: asyncio.Task[None]) -> str:
    if not task.done():
        return f"no answer within {STARTUP_SECONDS:.0f} s"
    if task.cancelled():
        return "cancelled"
    err = task.exception()
    return str(err) if err is not None else "it stopped at once"


def _file_logger(path: Path) -> logging.Logger:
    """Logger writing to `path` (0600); uvicorn's loggers go there too, not to the terminal."""
    private_dirs(path.parent)
    handler = logging.StreamHandler(open(path, "a", encoding="utf-8", opener=private_open))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log = logging.getLogger("sage_tui.api.requests")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for name in _UVICORN_LOGGERS:
        uvicorn_log = logging.getLogger(name)
        uvicorn_log.handlers[:] = [handler]
        uvicorn_log.setLevel(logging.WARNING)
        uvicorn_log.propagate = False
    return log


class _QuietServer(uvicorn.Server):
    """uvicorn's Server without its signal handlers (the front end has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


__all__ = ["LOOPBACK", "ApiServer"]
