"""Where a dataset a user names lives: a path, or a Hugging Face dataset id already downloaded.

`resolve_dataset` turns what was typed into something `files.open_rows` reads. A path that
exists is taken as it is. Anything else that could be a dataset id (`name` or `owner/name`) is
looked up in the local Hugging Face cache, offline (the network is never used: a download is
the user's decision, and the message says how), and the data files of its train split are
picked inside the snapshot the way the Hub names them (`data/train-00000-of-00001.parquet`,
`train.jsonl`, `train/part-0.parquet`, ...; files that name no split form the train split).

huggingface_hub is imported inside the function: `sage_tui.core` must import fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sage_tui.core.data.arrow_rows import DATASET_DICT, STATE, parquet_shards, pick_split
from sage_tui.core.data.files import SUPPORTED_EXTENSIONS
from sage_tui.core.data.formats import DatasetError

# The Hub's rules for a repo id, checked before the cache is asked.
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
# The words the Hub reads as split names in file and folder names, delimited by non-letters.
_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}
_WORDS = re.compile(r"[^a-z]+")
# JSON files of a snapshot that describe the data rather than hold it.
_METADATA = frozenset({"dataset_info.json", "dataset_infos.json", DATASET_DICT, STATE})
_SHOWN = 6


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment as huggingface_hub reads it
    (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), at each call."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
        )
        cache = os.path.join(home, "hub")
    return Path(os.path.expandvars(cache)).expanduser()


def download_command(repo_id: str) -> str:
    """The command that downloads the dataset `repo_id` into the cache."""
    return f"hf download --repo-type dataset {repo_id}"


def _is_repo_id(text: str) -> bool:
    # A name ending like a dataset file (`data/train.jsonl`) is a path that is missing.
    return (
        _REPO_ID.fullmatch(text) is not None
        and not text.lower().endswith(SUPPORTED_EXTENSIONS)
        and "--" not in text
        and ".." not in text
        and not text.endswith(".")
        and len(text) <= 96
    )


def _split_of(relative: Path) -> str | None:
    """The split a data file belongs to by its name, then its folders' (nearest first)."""
    for part in (relative.stem, *reversed(relative.parent.parts)):
        for word in _WORDS.split(part.lower()):
            if word in _SPLIT_WORDS:
                return _SPLIT_WORDS[word]
    return None


def _listed(paths: list[Path], root: Path) -> str:
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _data_files(snapshot: Path) -> list[Path]:
    found = []
    for path in sorted(snapshot.rglob("*")):
        relative = path.relative_to(snapshot)
        if any(part.startswith(".") for part in relative.parts):
            continue
        data = path.suffix.lower() in SUPPORTED_EXTENSIONS and path.name not in _METADATA
        if data and path.is_file():
            found.append(path)
    return found


def _train_split(repo_id: str, snapshot: Path) -> Path:
    """What open_rows reads for the train split of a downloaded snapshot."""
    where = f"'{repo_id}' in the local Hugging Face cache ({snapshot})"
    if (snapshot / DATASET_DICT).is_file() or (snapshot / STATE).is_file():
        return snapshot  # pushed as a save_to_disk folder
    files = _data_files(snapshot)
    if not files:
        others = sorted(p for p in snapshot.rglob("*") if p.is_file())
        found = _listed(others, snapshot) if others else "nothing"
        raise DatasetError(
            f"{where} holds no data file sage-tui reads ({', '.join(SUPPORTED_EXTENSIONS)};"
            f" found: {found})"
        )
    splits: dict[str, list[Path]] = {}
    for path in files:
        split = _split_of(path.relative_to(snapshot))
        if split is not None:
            splits.setdefault(split, []).append(path)
    if not splits:
        splits = {"train": files}
    chosen = pick_split(where, list(splits), "holds", str(splits[next(iter(splits))][0]))
    picked = splits[chosen]
    if len(picked) == 1:
        return picked[0]
    folder = picked[0].parent
    if all(p.parent == folder for p in picked):
        try:
            if set(parquet_shards(folder)) == set(picked):
                return folder
        except DatasetError:
            pass
    raise DatasetError(
        f"{where}: its {chosen} split is {len(picked)} files ({_listed(picked, snapshot)});"
        " a dataset is one file or a folder of the Parquet shards of one split:"
        " open one of them, or join them into one .jsonl"
    )


def resolve_dataset(source: str) -> Path:
    """The dataset `source` names, as a path `open_rows` reads.

    An existing path (after `~` expansion) is returned as it is; otherwise `source` is taken
    for a Hugging Face dataset id and looked up in the local cache (offline), and the path of
    its train split's file (or folder of Parquet shards) inside the snapshot is returned.
    DatasetError when it is neither, naming where it looked and how to download it.
    """
    path = Path(source).expanduser()
    if path.exists() or path.is_symlink():
        return path
    if not _is_repo_id(source):
        raise DatasetError(f"{source} does not exist")
    cache = hub_cache()
    not_found = DatasetError(
        f"'{source}' is neither a file nor a dataset in the local Hugging Face cache"
        f" (looked in {cache}); download it first with: {download_command(source)}"
    )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
    )

    try:
        snapshot = snapshot_download(
            source, repo_type="dataset", local_files_only=True, cache_dir=cache
        )
    except IncompleteSnapshotError:
        raise DatasetError(
            f"'{source}' is only partly in the local Hugging Face cache ({cache}); finish the"
            f" download with: {download_command(source)}"
        ) from None
    except (LocalEntryNotFoundError, HFValidationError):
        raise not_found from None
    except OSError as err:
        raise DatasetError(
            f"cannot read the Hugging Face cache {cache}: {err.strerror or err}"
        ) from None
    return _train_split(source, Path(snapshot))
