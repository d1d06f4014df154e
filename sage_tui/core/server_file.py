"""`$SAGE_HOME/server.json`: where the studio's API server listens, for other programs.

The server writes it once it accepts requests and removes it when it stops; `sage-tui ask`,
`sage-tui serve --status` and `active_model.json` read it. A file left by a server that was
killed is recognised as stale (its process is gone, or the pid now belongs to a process that
started after the file was written) and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

from sage_tui.core.atomic import write_atomic
from sage_tui.errors import SageError
from sage_tui.paths import Paths

START_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class ServerInfo:
    """A running API server as other programs find it."""

    host: str
    port: int
    pid: int
    started_at: float
    base_model: str
    """The base model its engine serves (its adapters are served too)."""
    key_file: str
    front: str = "serve"
    """"serve" (`sage-tui serve`) or "tui" (the studio's toggle)."""

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (`.../v1`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "url": self.url}, indent=2) + "\n"


def write_server(paths: Paths, info: ServerInfo) -> None:
    write_atomic(paths.server_file, info.to_json())


def remove_server(paths: Paths, pid: int | None = None) -> None:
    """Remove server.json (only when it is `pid`'s, given one: another server may own it)."""
    if pid is not None:
        found = _read(paths)
        if found is not None and found.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        paths.server_file.unlink()


def running_server(paths: Paths) -> ServerInfo | None:
    """The server named in server.json if its process still runs; None otherwise."""
    info = _read(paths)
    return info if info is not None and _alive(info) else None


def refuse_second_server(paths: Paths) -> None:
    """SageError when another process serves this home already (one server.json a home)."""
    other = running_server(paths)
    if other is not None and other.pid != os.getpid():
        raise SageError(
            f"an API server already runs at {other.url} (pid {other.pid}): use it, or stop it first"
        )


def _read(paths: Paths) -> ServerInfo | None:
    try:
        data = json.loads(paths.server_file.read_text(encoding="utf-8"))
        data.pop("url", None)
        info = ServerInfo(**data)
    except (OSError, ValueError, TypeError):
        return None  # none, or not one this version wrote: no server to use
    if not isinstance(info.port, int) or not isinstance(info.pid, int):
        return None
    return info


def _alive(info: ServerInfo) -> bool:
    if info.pid == os.getpid():
        return True
    import psutil

    try:
        process = psutil.Process(info.pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        created = process.create_time()
    except (psutil.Error, OSError):
        return False
    return created <= info.started_at + START_SLACK_SECONDS


def endpoint_fields(paths: Paths, base_model: str, model: str) -> dict[str, str]:
    """What active_model.json adds while a server serves `model` (on `base_model`): the URL,
    the model id to send and where the key is; nothing while none does."""
    info = running_server(paths)
    if info is None or info.base_model != base_model:
        return {}
    return {"endpoint": info.url, "api_model": model, "api_key_file": info.key_file}
