"""Every on-disk location sage-tui uses, derived from one home folder (SAGE_HOME).

The home is private: `ensure()` refuses one that other users could write to (or that is not
the user's), before creating anything, and creates what is missing 0700 (the database 0600;
see `core.private_files`). A folder is built from an id or a name only once it is checked to be
one plain name (`job_dir`, `model_dir`), wherever the id came from: the user, the database or
a spec.json.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.private_files import FILE_MODE, private_dirs
from sage_tui.errors import HomeError, UnsafeNameError

DEFAULT_HOME = Path("~/.sage")

SHARED_BITS = stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class NameRule:
    """What a plain name (one that can name a folder) looks like: a letter or digit, then
    letters, digits, '.', '_' or '-', at most `longest` in all (so never '', '.', '..', a '/',
    a NUL or a newline)."""

    what: str
    """What the name is, in the error ("task id")."""
    longest: int

    def problem(self, value: object) -> str | None:
        """Why `value` is not such a name (one line), or None when it is."""
        if isinstance(value, str) and _NAME.fullmatch(value) and len(value) <= self.longest:
            return None
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        return (
            f"{self.what} {shown} must be letters, digits, '.', '_' or '-', starting with a"
            f" letter or digit, at most {self.longest} characters"
        )

    def check(self, value: object) -> str:
        """`value` when it is such a name; UnsafeNameError saying why not."""
        problem = self.problem(value)
        if problem:
            raise UnsafeNameError(f"{problem}: no path is built from it")
        return value  # type: ignore[return-value]  # a str: problem() checked it


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TASK_ID = NameRule("task id", 64)
"""A fine-tuning job's id, which names its folder."""
MODEL_NAME = NameRule("model name", 128)
"""A registered model's name (a built-in one names its folder)."""


@dataclass(frozen=True)
class Paths:
    """Locations under SAGE_HOME, as laid out in ARCHITECTURE.md."""

    home: Path

    @property
    def db(self) -> Path:
        """The SQLite database: the one source of truth for models, jobs and chats."""
        return self.home / "sage-tui.db"

    @property
    def models(self) -> Path:
        """Provisioned base models, one folder each."""
        return self.home / "models"

    @property
    def finetune_outputs(self) -> Path:
        """One folder per fine-tuning job (adapter, events, logs, checkpoints)."""
        return self.home / "studio_finetune" / "outputs"

    @property
    def active_model_file(self) -> Path:
        """The active model, for other processes on the machine."""
        return self.home / "active_model.json"

    @property
    def api_key_file(self) -> Path:
        """The key the studio's OpenAI-compatible API asks for (0600)."""
        return self.home / "api_key"

    @property
    def server_file(self) -> Path:
        """The running API server's address and process, for other programs and `ask`."""
        return self.home / "server.json"

    @property
    def api_log(self) -> Path:
        """One line per request the API served (never the key)."""
        return self.home / "logs" / "api.log"

    @property
    def engine_log(self) -> Path:
        """What the inference engine's processes print while the TUI runs."""
        return self.home / "logs" / "engine.log"

    @property
    def queue_log(self) -> Path:
        """What the queue keeper (which starts queued jobs after the TUI exits) prints."""
        return self.home / "logs" / "queue.log"

    @property
    def logs(self) -> Path:
        """The engine's and the queue keeper's logs."""
        return self.home / "logs"

    @property
    def queue_lock(self) -> Path:
        """Held by the running queue keeper, so that one is enough."""
        return self.home / "queue.lock"

    @property
    def outputs_prefix(self) -> str:
        """`finetune_outputs` as a string ending in a separator: a checked task id appended
        to it is `job_dir(task_id)` without building a Path."""
        return f"{self.finetune_outputs}{os.sep}"

    def model_dir(self, name: str) -> Path:
        """Folder of the provisioned model `name`; UnsafeNameError unless it is a model name."""
        return self.models / MODEL_NAME.check(name)

    def job_dir(self, task_id: str) -> Path:
        """Output folder of the fine-tuning job `task_id`; UnsafeNameError unless it is a task
        id (one read back from a tampered database is refused here, not followed)."""
        return self.finetune_outputs / TASK_ID.check(task_id)

    @property
    def private_folders(self) -> tuple[Path, ...]:
        """The home and the folders `ensure` makes in it, outermost first."""
        return (
            self.home,
            self.models,
            self.finetune_outputs.parent,
            self.finetune_outputs,
            self.logs,
        )

    def check_private(self) -> None:
        """HomeError (naming the path and the `chmod` that fixes it) when the home, one of
        its folders or the database exists but belongs to another user or can be written by
        the group or others; those not there yet are fine.

        Root's own home is root's; a sticky world-writable folder (/tmp) is refused too. A
        POSIX ACL granting others write shows in the group bits (its mask) and is refused.
        """
        me = os.geteuid()
        for path in (*self.private_folders, self.db):
            try:
                status = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue  # not there yet (or cannot be: `ensure` says so)
            except OSError as err:
                raise self._unusable(err) from None
            if status.st_uid != me:
                raise HomeError(
                    f"{path} belongs to {_user(status.st_uid)}, not to you ({_user(me)}):"
                    " set SAGE_HOME (or --home) to a folder of your own"
                )
            shared = status.st_mode & SHARED_BITS
            if shared:
                who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "other users"}.get(
                    shared, "its group and other users"
                )
                mode = stat.S_IMODE(status.st_mode)
                fix = "chmod 700" if stat.S_ISDIR(status.st_mode) else "chmod 600"
                raise HomeError(
                    f"{path} can be written by {who} (mode {mode:04o}), so they could change"
                    f" your models, jobs and chats: run `{fix} {shlex.quote(str(path))}`"
                    f" (or `chmod go-w {shlex.quote(str(path))}`) and start again"
                )

    def ensure(self) -> Paths:
        """Check the home is private (see `check_private`, before anything is created), then
        create it and its folders 0700 and the database file 0600 (whatever the umask: SQLite
        gives its -wal and -shm the database's mode). HomeError if it is shared or not
        writable."""
        self.check_private()
        try:
            for folder in self.private_folders:
                private_dirs(folder)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            # Root ignores permission bits, so the only honest check is to write something.
            with tempfile.NamedTemporaryFile(dir=self.home, prefix=".write-check-"):
                pass
        except OSError as err:
            raise self._unusable(err) from None
        return self

    def _unusable(self, err: OSError) -> HomeError:
        return HomeError(
            f"SAGE_HOME {self.home} is not usable: {err.strerror or err}"
            " (set SAGE_HOME or --home to a writable folder)"
        )


def _user(uid: int) -> str:
    """A user id in words: "alice (uid 1000)", or "uid 1000" when it names no user."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def resolve_home(value: str | os.PathLike[str] | None = None) -> Path:
    """The home folder: an explicit value, else $SAGE_HOME, else ~/.sage."""
    raw = value if value is not None else os.environ.get("SAGE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().absolute()
