"""The registry of models the studio can use: built-in, local folders and Hugging Face ids.

All records live in the store; this module decides what may be registered and how: a folder
must hold a loadable model, a built-in model is provisioned before it is registered, and the
first base model registered becomes the active one.

A model's own Python code (`auto_map` in its config, `*.py` files from the Hub) runs only for
a base model the user registered with `trust_remote_code=True` (`models import
--trust-remote-code`): its record's config holds `"trust_remote_code": true`. Everything that
loads a model (the engines, the training runner) asks :func:`remote_code_allowed`; an adapter
follows its base model's record.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from sage_tui.core.atomic import write_atomic
from sage_tui.core.models.adapters import read_adapter
from sage_tui.core.models.builtin import Progress, builtin_model, provision
from sage_tui.core.models.folder import check_model_folder, read_manifest
from sage_tui.core.server_file import endpoint_fields
from sage_tui.core.store import ACTIVE_MODEL_KEY, ModelRecord, Store
from sage_tui.errors import ModelError, one_line
from sage_tui.paths import MODEL_NAME, Paths

TRUST_REMOTE_CODE = "trust_remote_code"
"""The key in a base model's record config that allows running its own code."""
HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelRegistry:
    """Registers, looks up and removes models; provisions built-in ones."""

    def __init__(self, store: Store, paths: Paths) -> None:
        self.store = store
        self.paths = paths

    def get(self, name: str) -> ModelRecord:
        """The model registered as `name`, or a ModelError listing what is registered."""
        record = self.store.get_model(name)
        if record is None:
            known = ", ".join(m.name for m in self.store.list_models()) or "none yet"
            raise ModelError(f"no model named {name!r} is registered (registered: {known})")
        return record

    def list(self) -> list[ModelRecord]:
        """Every registered model, base models first."""
        return self.store.list_models()

    @property
    def active_name(self) -> str | None:
        """Name of the model the chat uses, if one is chosen."""
        return self.store.get_setting(ACTIVE_MODEL_KEY)

    def builtin_ready(self, name: str) -> bool:
        """True if built-in model `name` is provisioned on disk and registered."""
        builtin_model(name)
        return (
            self.store.get_model(name) is not None
            and read_manifest(self.paths.model_dir(name)) is not None
        )

    def pull(self, name: str, progress: Progress = lambda _: None) -> ModelRecord:
        """Provision built-in model `name` (converting it if needed) and register it."""
        model = builtin_model(name)
        folder = provision(model, self.paths.model_dir(name), progress)
        return self._register(
            ModelRecord(
                name=name,
                kind="base",
                source="builtin",
                path=str(folder),
                config={"description": model.description, "licence": model.licence},
            )
        )

    def import_model(
        self,
        source: str,
        name: str | None = None,
        progress: Progress = lambda _: None,
        *,
        trust_remote_code: bool = False,
    ) -> ModelRecord:
        """Register a local model folder, or a Hugging Face id (downloaded into the HF cache).

        `trust_remote_code`: the user allows the model's own Python code to run when it is
        loaded (and a Hub download fetches its `*.py` files); off, they are never fetched or
        run. Importing the same folder again sets it as asked this time.
        """
        path = Path(source).expanduser()
        if path.exists() or source.startswith((".", "/", "~")) or not HF_ID_RE.match(source):
            folder = path.absolute()
            check_model_folder(folder)
            record_source, default_name = "local", folder.name
        else:
            folder = _download(source, progress, with_code=trust_remote_code)
            check_model_folder(folder)
            record_source, default_name = "hf", source.split("/", 1)[1]
        name = _check_name(name or default_name.lower())
        existing = self.store.get_model(name)
        if existing is not None and existing.path != str(folder):
            raise ModelError(
                f"a model named {name!r} is already registered from {existing.path}:"
                " choose another with --name"
            )
        config: dict[str, object] = {"hf_id": source} if record_source == "hf" else {}
        if trust_remote_code:
            config[TRUST_REMOTE_CODE] = True
        return self._register(
            ModelRecord(
                name=name, kind="base", source=record_source, path=str(folder), config=config
            )
        )

    def register_adapter(
        self, name: str, path: Path, base_model: str, source: str = "finetune"
    ) -> ModelRecord:
        """Register a LoRA adapter of registered base model `base_model`."""
        _check_name(name)
        base = self.get(base_model)
        if base.kind != "base":
            raise ModelError(f"{base_model!r} is an adapter; an adapter needs a base model")
        info = read_adapter(Path(path).absolute())
        return self._register(
            ModelRecord(
                name=name,
                kind="adapter",
                source=source,
                path=str(info.path),
                base_model=base_model,
                config={"rank": info.rank, "alpha": info.alpha},
            )
        )

    def adapters_of(self, base_model: str) -> list[ModelRecord]:
        """Every registered adapter of `base_model`."""
        return [m for m in self.list() if m.kind == "adapter" and m.base_model == base_model]

    def base_of(self, record: ModelRecord) -> ModelRecord:
        """The base model of `record` (itself if it is a base model)."""
        return self.get(record.base_model) if record.kind == "adapter" else record

    def trusts_remote_code(self, record: ModelRecord) -> bool:
        """Whether loading `record` may run its own code: its base model's record says the
        user allowed it (see `remote_code_allowed`)."""
        return remote_code_allowed(self.base_of(record))

    def set_active(self, name: str, engine: str = "") -> ModelRecord:
        """Make `name` the model the chat uses, for this process and for others on the machine.

        Writes the database, `$SAGE_HOME/active_model.json` and, as SAGE's pipelines expect,
        SAGE_STUDIO_LLM_MODEL / SAGE_STUDIO_LLM_PATH in this process's environment.
        """
        record = self.get(name)
        self.store.set_setting(ACTIVE_MODEL_KEY, name)
        self._write_active_file(record, engine)
        os.environ["SAGE_STUDIO_LLM_MODEL"] = record.name
        os.environ["SAGE_STUDIO_LLM_PATH"] = record.path
        return record

    def refresh_active_file(self) -> None:
        """Write active_model.json again (an API server started or stopped: its endpoint is
        added or taken out); nothing when no model is active."""
        name = self.active_name
        record = self.store.get_model(name) if name else None
        if record is None:
            return
        try:
            engine = json.loads(self.paths.active_model_file.read_text()).get("engine", "")
        except (OSError, ValueError, AttributeError):
            engine = ""
        self._write_active_file(record, engine if isinstance(engine, str) else "")

    def _write_active_file(self, record: ModelRecord, engine: str) -> None:
        base = self.base_of(record)
        info = {
            "name": record.name,
            "kind": record.kind,
            "base_model": base.name,
            "base_path": base.path,
            "adapter_path": record.path if record.kind == "adapter" else None,
            "engine": engine,
            "switched_at": time.time(),
            **endpoint_fields(self.paths, base.name, record.name),
        }
        write_atomic(self.paths.active_model_file, json.dumps(info, indent=2) + "\n")

    def check_new_name(self, name: str) -> str:
        """`name`, if it is a usable model name that no model has yet; ModelError otherwise."""
        _check_name(name)
        if self.store.get_model(name) is not None:
            raise ModelError(f"a model named {name!r} is registered already: choose another name")
        return name

    def register_merged(
        self, name: str, folder: Path, *, base: ModelRecord, adapter: ModelRecord
    ) -> ModelRecord:
        """Register the folder an adapter was merged into as a base model of its own."""
        check_model_folder(folder)
        config: dict[str, object] = {"merged_from": adapter.name, "base": base.name}
        if remote_code_allowed(base):
            config[TRUST_REMOTE_CODE] = True
        return self._register(
            ModelRecord(name=name, kind="base", source="merged", path=str(folder), config=config)
        )

    def rename(self, old: str, new: str) -> ModelRecord:
        """Give `old` the name `new`; its adapters, jobs, votes and chats follow it."""
        record = self.get(old)
        if new == old:
            raise ModelError(f"{old} is already called {new}")
        self.check_new_name(new)
        if record.source == "builtin":
            raise ModelError(
                f"{old} is a built-in model and keeps its name (the studio provisions it under"
                " it); import its folder under another name instead"
            )
        self.store.rename_model(old, new)
        if self.active_name == new:
            self.set_active(new, self._active_engine())
        return self.get(new)

    def _active_engine(self) -> str:
        try:
            info = json.loads(self.paths.active_model_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        return str(info.get("engine", "")) if isinstance(info, dict) else ""

    def remove(self, name: str) -> None:
        """Forget model `name` (its files stay on disk)."""
        self.get(name)
        self.store.remove_model(name)
        if self.active_name == name:
            self.store.set_setting(ACTIVE_MODEL_KEY, None)

    def _register(self, record: ModelRecord) -> ModelRecord:
        stored = self.store.upsert_model(record)
        if self.active_name is None and stored.kind == "base":
            self.store.set_setting(ACTIVE_MODEL_KEY, stored.name)
        return stored


def remote_code_allowed(base: ModelRecord) -> bool:
    """Whether the base model `base` may run its own code: only when its record's config holds
    exactly `true` (a string, a number or anything else read back from the database is no)."""
    config = base.config
    return (
        base.kind == "base" and isinstance(config, dict) and config.get(TRUST_REMOTE_CODE) is True
    )


def _check_name(name: str) -> str:
    if MODEL_NAME.problem(name) is not None:
        raise ModelError(
            f"{name!r} is not a usable model name: letters, digits, '.', '_' and '-' only,"
            f" at most {MODEL_NAME.longest} (give one with --name)"
        )
    return name


def _download(repo_id: str, progress: Progress, *, with_code: bool = False) -> Path:
    """Fetch a Hugging Face model into the HF cache (or find it there) and return its folder;
    its `*.py` files only `with_code` (the user trusts its remote code)."""
    progress(f"getting {repo_id} from the Hugging Face Hub (or its local cache)")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
            + (["*.py"] if with_code else []),
        )
    except Exception as err:  # the hub raises many kinds; all mean "not available here"
        reason = one_line(err)
        raise ModelError(f"could not get {repo_id!r} from the Hugging Face Hub: {reason}") from None
    return Path(folder)
