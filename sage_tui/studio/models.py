"""ModelDesk: managing the registered models, for the Models screen and `sage-tui models`.

Details of a model (its folder's facts, the job that made an adapter, its A/B record), delete
with its refusals, rename, merge an adapter into a new base model (verified), export for other
tools with a README card, and import of a base model folder, a Hugging Face id or a PEFT
adapter. Every method blocks (disk, child processes): front ends call them off their loop.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sage_tui.core.arena import Standing
from sage_tui.core.engines.model_shape import ModelShape
from sage_tui.core.models.details import FolderFacts, read_folder_facts
from sage_tui.core.models.export import export_folder
from sage_tui.core.models.folder import read_json_object
from sage_tui.core.models.merge import run_merge
from sage_tui.core.performance import ReplyPerformance, reply_performance
from sage_tui.core.store import ModelRecord
from sage_tui.core.training.job_rows import JobError
from sage_tui.core.training.jobs import Job
from sage_tui.core.training.memory_estimate import gib
from sage_tui.errors import ModelError, SageError
from sage_tui.services import Services
from sage_tui.studio.arena import ArenaDesk
from sage_tui.studio.evaluation import read_saved
from sage_tui.studio.jobs import JobDesk, JobRequest
from sage_tui.studio.model_card import model_card
from sage_tui.studio.state import ActiveModelChanged, ModelsChanged, Observers

Progress = Callable[[str], None]
BUSY = ("queued", "running")


@dataclass(frozen=True)
class ModelDetails:
    """What the details pane and `models show` say about one model."""

    record: ModelRecord
    facts: FolderFacts
    active: bool
    job: Job | None
    """The fine-tuning job that made this adapter, if the studio made it."""
    standing: Standing | None
    """Its line of its base's leaderboard, if it has been voted on."""
    adapters: tuple[str, ...] = ()
    """For a base model: its adapters' names."""
    performance: ReplyPerformance | None = None
    """Its recent replies' speed, from the saved chats."""
    memory: tuple[str, ...] = ()
    """For a base model: what serving it and training on it would take (estimates)."""

    @property
    def made_by_studio(self) -> bool:
        return self.record.source in ("builtin", "merged")


class ModelDesk:
    """Details, delete, rename, merge, export and import of registered models."""

    def __init__(
        self, services: Services, observers: Observers, arena: ArenaDesk, jobs: JobDesk
    ) -> None:
        self.services = services
        self.jobs = jobs
        self.registry = services.registry
        self.observers = observers
        self.arena = arena

    # -- reading ------------------------------------------------------------------------------

    def list(self) -> list[ModelRecord]:
        """Every registered model, base models first."""
        return self.registry.list()

    def tree(self) -> list[tuple[ModelRecord, list[ModelRecord]]]:
        """Base models, each with its adapters (merged models are base models)."""
        models = self.registry.list()
        return [
            (base, [m for m in models if m.kind == "adapter" and m.base_model == base.name])
            for base in models
            if base.kind == "base"
        ]

    def job_of(self, record: ModelRecord) -> Job | None:
        """The job whose folder holds `record` (an adapter the studio trained)."""
        if record.kind != "adapter" or record.source != "finetune":
            return None
        try:
            return self.services.supervisor.get(Path(record.path).name)
        except (JobError, ValueError):
            return None

    def details(self, name: str) -> ModelDetails:
        record = self.registry.get(name)
        base = self.registry.base_of(record)
        standing = next((s for s in self.arena.stats(base.name) if s.model == name), None)
        adapters = tuple(a.name for a in self.registry.adapters_of(name))
        return ModelDetails(
            record=record,
            facts=read_folder_facts(Path(record.path)),
            active=self.registry.active_name == name,
            job=self.job_of(record),
            standing=standing,
            adapters=adapters if record.kind == "base" else (),
            performance=reply_performance(self.services.store, name),
            memory=self._memory(record) if record.kind == "base" else (),
        )

    def _memory(self, record: ModelRecord) -> tuple[str, ...]:
        """Estimates for a base model: the engine (weights and a KV cache as long as its
        context) and a training job with the host's preset."""
        lines = []
        try:
            shape = ModelShape.from_folder(Path(record.path))
        except (SageError, OSError, ValueError):
            shape = None
        if shape is not None:
            weights, context = shape.weight_bytes, shape.max_position_embeddings
            kv = shape.kv_bytes_per_token * context
            lines.append(
                f"engine ~{gib(weights + kv)} GiB (weights {gib(weights)}, KV cache {gib(kv)}"
                f" for {context:,} tokens; the engine plans a shorter context to fit)"
            )
        try:
            verdict = self.jobs.estimate(JobRequest(base=record.name, dataset=""))
        except SageError:
            verdict = None
        if verdict is not None:
            lines.append(f"training {verdict.line.removeprefix('memory: ')} (host preset)")
        return tuple(lines)

    # -- delete and rename --------------------------------------------------------------------

    def why_not_delete(self, name: str) -> str | None:
        """Why `name` cannot be deleted now (None: it can)."""
        record = self.registry.get(name)
        if self.registry.active_name == name:
            return f"{name} is the chat's model: use another one first (Enter on it)"
        for job in self.services.supervisor.list():
            if job.status in BUSY and job.base_model == name:
                return f"job {job.id} is {job.status} on {name}: cancel it or wait for it to end"
        adapters = [a.name for a in self.registry.adapters_of(name)]
        if record.kind == "base" and adapters:
            listed = ", ".join(adapters)
            return f"{name} has adapters ({listed}): delete or merge them first"
        return None

    def delete_effect(self, name: str) -> str:
        """What deleting `name` does to its files, in a sentence (for the confirmation)."""
        record = self.registry.get(name)
        if self._owns_folder(record):
            return f"its folder {record.path} is deleted"
        if self.job_of(record) is not None:
            job = Path(record.path).name
            return f"its files stay in job {job}'s folder (delete the job to remove them)"
        return f"it is forgotten; its files stay at {record.path}"

    def delete(self, name: str) -> str:
        """Delete `name` (refused while in use); returns what was done, in a sentence."""
        problem = self.why_not_delete(name)
        if problem is not None:
            raise ModelError(f"{name} cannot be deleted: {problem}")
        record = self.registry.get(name)
        effect = self.delete_effect(name)
        self.registry.remove(name)
        if self._owns_folder(record):
            folder = Path(record.path)
            if folder.is_symlink():
                folder.unlink()  # a link the studio made: the files it points at stay
            else:
                shutil.rmtree(folder, ignore_errors=True)
        self.observers.publish(ModelsChanged())
        return f"{name} deleted: {effect}"

    def _owns_folder(self, record: ModelRecord) -> bool:
        """Whether the studio made `record`'s folder (a built-in or merged model under the
        home's models/), so deleting the model deletes the files."""
        models = self.services.settings.paths.models.resolve()
        parent = Path(record.path).absolute().parent.resolve()
        return record.source in ("builtin", "merged") and parent == models

    def rename(self, old: str, new: str) -> ModelRecord:
        record = self.registry.rename(old, new)
        self.observers.publish(ModelsChanged())
        if record.name == self.registry.active_name:
            self.observers.publish(ActiveModelChanged(record.name))
        return record

    # -- merge, export, import ----------------------------------------------------------------

    def merge(
        self, adapter: str, name: str | None = None, progress: Progress = print
    ) -> ModelRecord:
        """Merge `adapter` into its base as a new base model `name` (default
        `<adapter>-merged`), verified on a few greedy answers, registered when verified."""
        record = self.registry.get(adapter)
        if record.kind != "adapter":
            raise ModelError(f"{adapter} is a base model: only an adapter can be merged into one")
        base = self.registry.base_of(record)
        base_path = Path(base.path)
        if not base_path.is_dir():
            raise ModelError(
                f"the base model {base.name}'s folder {base.path} is gone: import it again to merge"
            )
        if not Path(record.path).is_dir():
            raise ModelError(f"the adapter's folder {record.path} is gone")
        name = self.registry.check_new_name(name or f"{adapter}-merged")
        out = self.services.settings.paths.model_dir(name)
        result = run_merge(
            base_path,
            Path(record.path),
            out,
            trust_remote_code=self.registry.trusts_remote_code(base),
            progress=progress,
        )
        merged = self.registry.register_merged(name, out, base=base, adapter=record)
        progress(f"{name}: the adapter's answers to {result.prompts} prompts are unchanged")
        self.observers.publish(ModelsChanged())
        return merged

    def export(self, name: str, dest: Path, progress: Progress = print) -> Path:
        """Copy `name` to `dest` with a README card; an adapter exports its adapter files."""
        details = self.details(name)
        base = self.registry.base_of(details.record) if details.record.kind == "adapter" else None
        evaluation = read_saved(details.job.output_dir) if details.job is not None else None
        card = model_card(details, base, evaluation)
        return export_folder(
            Path(details.record.path),
            dest,
            card,
            adapter=details.record.kind == "adapter",
            progress=progress,
        )

    def import_model(
        self,
        source: str,
        name: str | None = None,
        *,
        base: str | None = None,
        trust_remote_code: bool = False,
        progress: Progress = print,
    ) -> ModelRecord:
        """A base model folder or Hugging Face id, or a PEFT adapter folder (of `base`, or of
        the registered base its adapter_config.json names)."""
        folder = Path(source).expanduser()
        if (folder / "adapter_config.json").is_file():
            record = self._import_adapter(folder.absolute(), name, base)
        else:
            if base is not None:
                raise ModelError("--base is for an adapter; this is not an adapter folder")
            record = self.registry.import_model(
                source, name=name, progress=progress, trust_remote_code=trust_remote_code
            )
        self.observers.publish(ModelsChanged())
        return record

    def _import_adapter(self, folder: Path, name: str | None, base: str | None) -> ModelRecord:
        config = read_json_object(folder / "adapter_config.json", "")
        named = str(config.get("base_model_name_or_path") or "")
        if base is None:
            base = self._base_named(named)
        if base is None:
            bases = ", ".join(b.name for b, _ in self.tree()) or "none registered"
            raise ModelError(
                f"{folder} is an adapter of {named or 'an unnamed base'}, which is not registered:"
                f" import that base first, or name the base with --base (bases: {bases})"
            )
        return self.registry.register_adapter(name or folder.name.lower(), folder, base, "local")

    def _base_named(self, named: str) -> str | None:
        """The registered base model an adapter's `base_model_name_or_path` points at."""
        if not named:
            return None
        for record, _ in self.tree():
            hf_id = record.config.get("hf_id") if isinstance(record.config, dict) else None
            if named in (record.name, hf_id) or (
                Path(named).is_dir() and Path(named).resolve() == Path(record.path).resolve()
            ):
                return record.name
        return None
