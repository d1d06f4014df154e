"""The job folder contract: what lives in `studio_finetune/outputs/<task_id>/` and what it means.

The runner writes here, the supervisor, the CLI and the UI read here; nothing else names these
files. A job folder holds:

- `spec.json`: what was asked (:class:`~sage_tui.core.training.spec.JobSpec`), written once,
  atomically, before the job exists in the database;
- `events.jsonl`: JSON lines the runner appends (started, step, eval, checkpoint, finished,
  stopped, failed); a job's outcome is read from these and the runner's exit code;
- `train.log`: everything the runner printed, after a header line per start;
- `STOP`: present while a stop was asked; the runner saves a checkpoint and exits with
  :data:`EXIT_STOPPED`;
- `train.jsonl`, `eval.jsonl`: the dataset's rows as the trainer gets them (converted, with
  placeholders filled, split), written by the runner at each start so the dataset is streamed
  rather than held in memory; `dataset_cache/`: the memory-mapped Arrow files made from them;
- `checkpoints/checkpoint-N/`: the trainer's checkpoints; one counts only once its adapter
  weights are there and its `trainer_state.json` (written last) reads back whole;
- the adapter (`adapter_model.safetensors`, `adapter_config.json`, tokenizer files),
  `training_args.json` and `metrics.json`, moved in together once training finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.atomic import write_atomic
from sage_tui.core.training.spec import JobSpec, SpecError

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
STOP_FILE = "STOP"
CHECKPOINTS = "checkpoints"
TRAIN_ROWS = "train.jsonl"
EVAL_ROWS = "eval.jsonl"
DATASET_CACHE = "dataset_cache"
CHECKPOINT_DONE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_ARGS = "training_args.json"
METRICS = "metrics.json"
STAGING = ".final.partial"
"""Where the runner assembles the final adapter before moving it in."""
LOG_TAIL_BYTES = 16384
"""How much of the end of train.log a tail reads, whatever the log's size."""

EXIT_FINISHED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3
"""The runner's exit codes: finished (adapter saved), failed (a `failed` event says why),
stopped on request (a checkpoint was saved; the job can be resumed)."""


@dataclass(frozen=True)
class JobFolder:
    """One job's folder and the files in it."""

    path: Path

    @property
    def task_id(self) -> str:
        """The job's id (the folder's name)."""
        return self.path.name

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def events_file(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def train_rows(self) -> Path:
        return self.path / TRAIN_ROWS

    @property
    def eval_rows(self) -> Path:
        return self.path / EVAL_ROWS

    @property
    def dataset_cache(self) -> Path:
        return self.path / DATASET_CACHE

    @property
    def adapter_weights(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    @property
    def staging(self) -> Path:
        return self.path / STAGING

    def write_spec(self, spec: JobSpec) -> None:
        """Write spec.json (atomically: a reader sees all of it or none)."""
        write_atomic(self.spec_file, spec.to_json() + "\n")

    def read_spec(self) -> JobSpec:
        """The job's spec.json (SpecError for unknown settings)."""
        return JobSpec.from_file(self.spec_file)

    def request_stop(self) -> None:
        """Ask the runner to save a checkpoint and exit."""
        with contextlib.suppress(OSError):
            self.stop_file.touch()

    def stop_requested(self) -> bool:
        return self.stop_file.exists()

    def clear_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.stop_file.unlink()

    def problem(self, *, spec: bool = True) -> str | None:
        """Why this folder cannot be read, in one line naming the path; None when it reads.

        Checks the folder and, unless `spec` is False (an ended job needs neither), spec.json
        and that events.jsonl, once there, is a readable file. Reads no more than spec.json.
        """
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return f"job folder missing: {self.path}"
        except OSError as err:
            return f"job folder unreadable: {self.path}: {err.strerror or err}"
        if not stat.S_ISDIR(status.st_mode):
            return f"job folder is not a folder: {self.path}"
        if not os.access(self.path, os.R_OK | os.X_OK):
            return f"job folder unreadable: {self.path}: permission denied"
        if not spec:
            return None
        try:
            self.read_spec()
        except FileNotFoundError:
            return f"spec.json missing: {self.spec_file}"
        except OSError as err:
            return f"spec.json unreadable: {self.spec_file}: {err.strerror or err}"
        except ValueError as err:  # torn or garbage (UnicodeDecodeError included)
            return f"spec.json is not valid JSON (torn?): {self.spec_file}: {err}"
        except (SpecError, TypeError) as err:
            return f"spec.json does not hold a job spec: {self.spec_file}: {err}"
        try:
            events = self.events_file.stat()
        except FileNotFoundError:
            return None  # no event written yet
        except OSError as err:
            return f"events unreadable: {self.events_file}: {err.strerror or err}"
        if not stat.S_ISREG(events.st_mode):
            return f"events unreadable: {self.events_file}: not a file"
        if not os.access(self.events_file, os.R_OK):
            return f"events unreadable: {self.events_file}: permission denied"
        return None

    def log_tail(self, lines: int = 15) -> str:
        """The last `lines` non-blank lines of train.log ("" while there is none), read from
        its last LOG_TAIL_BYTES only."""
        try:
            with open(self.log_file, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - LOG_TAIL_BYTES))
                chunk = handle.read()
        except OSError:
            return ""
        text = chunk.decode("utf-8", errors="replace").replace("\r", "\n")
        return "\n".join(deque((line for line in text.splitlines() if line.strip()), maxlen=lines))

    def remove(self) -> None:
        """Remove the folder and everything in it (a link or file in its place is unlinked,
        never followed); folders we may not read or enter are made ours first. OSError naming
        what could not be removed; nothing to do when it is gone."""
        path = self.path
        if path.is_symlink() or not path.is_dir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        try:
            shutil.rmtree(path)
            return
        except OSError:
            pass
        os.chmod(path, stat.S_IRWXU)
        for root, dirs, _files in os.walk(path):  # top-down: each folder is opened after it
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, name), stat.S_IRWXU, follow_symlinks=False)
        shutil.rmtree(path)

    def has_adapter(self) -> bool:
        """Whether training finished and left its adapter here."""
        return self.adapter_weights.is_file()

    def last_checkpoint(self) -> Path | None:
        """The newest complete `checkpoints/checkpoint-N` folder (see `checkpoint_complete`)."""
        found = []
        for folder in self.checkpoints.glob("checkpoint-*"):
            suffix = folder.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and checkpoint_complete(folder):
                found.append((int(suffix), folder))
        return max(found)[1] if found else None


def checkpoint_complete(folder: Path) -> bool:
    """Whether the trainer finished writing the checkpoint in `folder`.

    It writes `trainer_state.json` after the weights, optimizer and RNG state, in one plain
    write: a runner killed (or out of disk) while saving leaves it missing or cut short, which
    no longer parses. Its weights are checked too, in case an older checkpoint was being deleted
    (the trainer keeps three) when the runner died.
    """
    try:
        state = json.loads((folder / CHECKPOINT_DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and (folder / ADAPTER_WEIGHTS).is_file()
