"""Every on-disk location sage-tui uses, derived from one home folder (SAGE_HOME)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sage_tui.errors import HomeError

DEFAULT_HOME = Path("~/.sage")


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
    def engine_log(self) -> Path:
        """What the inference engine's processes print while the TUI runs."""
        return self.home / "logs" / "engine.log"

    @property
    def queue_log(self) -> Path:
        """What the queue keeper (which starts queued jobs after the TUI exits) prints."""
        return self.home / "logs" / "queue.log"

    @property
    def queue_lock(self) -> Path:
        """Held by the running queue keeper, so that one is enough."""
        return self.home / "queue.lock"

    def model_dir(self, name: str) -> Path:
        """Folder of the provisioned model `name`."""
        return self.models / name

    def job_dir(self, task_id: str) -> Path:
        """Output folder of the fine-tuning job `task_id`."""
        return self.finetune_outputs / task_id

    def ensure(self) -> Paths:
        """Create the home (mode 0700) and its folders; raise HomeError if it is not writable."""
        try:
            fresh = not self.home.exists()
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            if fresh:
                # mkdir's mode is filtered by the umask; the home holds chats and weights.
                os.chmod(self.home, 0o700)
            for folder in (self.models, self.finetune_outputs):
                folder.mkdir(parents=True, exist_ok=True)
            # Root ignores permission bits, so the only honest check is to write something.
            with tempfile.NamedTemporaryFile(dir=self.home, prefix=".write-check-"):
                pass
        except OSError as err:
            reason = err.strerror or str(err)
            raise HomeError(
                f"SAGE_HOME {self.home} is not usable: {reason}"
                " (set SAGE_HOME or --home to a writable folder)"
            ) from None
        return self


def resolve_home(value: str | os.PathLike[str] | None = None) -> Path:
    """The home folder: an explicit value, else $SAGE_HOME, else ~/.sage."""
    raw = value if value is not None else os.environ.get("SAGE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().absolute()
