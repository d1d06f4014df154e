"""The GPUs the user lets the studio use: ``CUDA_VISIBLE_DEVICES`` as it was at start-up.

On a shared server the user limits the studio with ``CUDA_VISIBLE_DEVICES`` (numbers, GPU UUIDs
or MIG ids). The studio measures GPUs through NVML, which ignores that variable and numbers
every GPU of the machine in PCI bus order. :class:`GpuScope` joins the two: it is captured once
from the user's environment, says which NVML GPUs are visible, and turns the NVML indices the
planner and the queue chose back into the value a child process (an engine, a training
runner) must get, so the child sees exactly those GPUs.

Nothing here writes ``os.environ``: children get their variables explicitly
(:meth:`GpuScope.child_env`, :meth:`GpuScope.base_env`), so starting an engine never narrows
what the queue sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sage_tui.errors import SageError

if TYPE_CHECKING:
    from sage_tui.core.gpu import GpuSample, ResourceSnapshot

__all__ = [
    "GpuScope",
    "GpusUnreadable",
    "Token",
    "gpus_expected",
    "parse_visible_devices",
    "startup_scope",
]

Token = int | str
"""One entry of CUDA_VISIBLE_DEVICES: a GPU number, a ``GPU-`` UUID or a ``MIG-`` id."""

VISIBLE = "CUDA_VISIBLE_DEVICES"
ORDER = "CUDA_DEVICE_ORDER"
PCI_BUS_ID = "PCI_BUS_ID"


class GpusUnreadable(SageError):
    """GPUs are (or may be) there but cannot be read: nothing may be placed on a guess."""

    def __init__(self, reason: str, consequence: str = "") -> None:
        self.reason = reason
        text = f"cannot read this machine's GPUs ({reason})"
        super().__init__(f"{text}: {consequence}" if consequence else text)


def parse_visible_devices(value: str | None) -> tuple[Token, ...] | None:
    """The entries of a CUDA_VISIBLE_DEVICES value, by CUDA's rules; None when it is unset.

    The rules are those CUDA applies and PyTorch mirrors (``torch.cuda._parse_visible_devices``):
    entries are comma-separated and stripped of whitespace; an empty value hides every GPU;
    the first entry decides the kind of list: ``GPU-...`` UUIDs, ``MIG-...`` ids, or numbers
    read like ``strtoul`` (``"1gpu"`` is 1). The list ends at the first entry CUDA cannot
    read: a negative or non-numeric entry in a list of numbers (``-1`` hides every GPU), an
    entry of another kind, an empty entry. An entry given twice hides every GPU.
    """
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    first = parts[0]
    prefix = "GPU-" if first.startswith("GPU-") else "MIG-" if first.startswith("MIG-") else ""
    tokens: list[Token] = []
    for part in parts:
        token: Token | None
        if prefix:
            token = part if part.startswith(prefix) and len(part) > len(prefix) else None
        else:
            token = _leading_number(part)
        if token is None:
            break
        if token in tokens:
            return ()
        tokens.append(token)
    return tuple(tokens)


@dataclass(frozen=True)
class GpuScope:
    """The user's CUDA_VISIBLE_DEVICES (and CUDA_DEVICE_ORDER), captured once at start-up.

    How entries name NVML GPUs:

    - a number is the NVML index (PCI bus order). CUDA numbers GPUs that way only with
      ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (or on a machine of identical GPUs); children the studio
      starts get that order, so a number means the GPU the studio measured;
    - a ``GPU-`` UUID matches the GPU whose UUID starts with it (a prefix, as CUDA allows);
      one matching no GPU, or more than one, ends the list, as in CUDA;
    - a MIG id (``MIG-<uuid>``, or the older ``MIG-GPU-<uuid>/<gi>/<ci>``) stands for its parent
      GPU. NVML's figures are the parent's: its memory is the whole GPU's, more than the MIG
      instance has. That is an approximation the planner lives with.

    Entries named by UUID or MIG id reach children untouched; numbers stay numbers. The scope
    remembers which NVML index each UUID named the last time :meth:`visible` ran, because the
    indices the queue and the planner hand back came from that reading.
    """

    raw: str | None
    """CUDA_VISIBLE_DEVICES as the user set it; None when unset (every GPU)."""
    order: str | None = None
    """CUDA_DEVICE_ORDER as the user set it; None when unset."""
    _named: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def capture(cls, environ: Mapping[str, str] | None = None) -> GpuScope:
        """The scope of `environ`; by default the studio's environment without any temporary
        change for a child being started (see ``child_env.temporary_environ``)."""
        if environ is None:
            from sage_tui.core.child_env import outer_environ

            environ = outer_environ()
        return cls(environ.get(VISIBLE), environ.get(ORDER))

    @property
    def tokens(self) -> tuple[Token, ...] | None:
        """The entries CUDA reads from :attr:`raw`; None when unset."""
        return parse_visible_devices(self.raw)

    @property
    def names_gpus(self) -> bool:
        """Whether the user's value names at least one GPU (an unset value names none)."""
        return bool(self.tokens)

    def describe(self) -> str:
        """The limit in words for messages, "" when there is none."""
        return "" if self.raw is None else f"CUDA_VISIBLE_DEVICES={self.raw!r}"

    def visible(self, samples: Sequence[GpuSample], unread: Iterable[int] = ()) -> list[GpuSample]:
        """The GPUs of `samples` this scope shows, in NVML order.

        `unread`: NVML indices that exist but could not be read; they still count for where
        CUDA's list ends (a number past the last GPU ends it).
        """
        named = self._resolve(samples, tuple(unread))
        return [sample for sample in samples if sample.index in named]

    def usable(self, snapshot: ResourceSnapshot) -> list[GpuSample]:
        """The visible GPUs of a snapshot; GpusUnreadable when they cannot be known.

        That is when the snapshot has a ``gpu_error``, or when no visible GPU could be read but
        one NVML could not read may be among them: placing work on the CPU then is a guess.
        """
        error = getattr(snapshot, "gpu_error", None)  # stand-in snapshots may lack both
        if error:
            raise GpusUnreadable(error)
        unread = tuple(getattr(snapshot, "unread_gpus", ()))
        visible = self.visible(snapshot.gpus, unread)
        if not visible and unread and self._may_show(unread):
            names = ",".join(map(str, unread))
            raise GpusUnreadable(f"NVML could not read GPU {names}")
        return visible

    def child_value(self, indices: Iterable[int]) -> str:
        """The CUDA_VISIBLE_DEVICES value that shows a child exactly the GPUs `indices` (NVML
        numbering); "" for none. SageError for a GPU outside the scope."""
        tokens = self.tokens
        values: list[str] = []
        for index in indices:
            if tokens is None or index in tokens:
                values.append(str(index))
                continue
            with self._lock:
                named = self._named.get(index)
            if not named:
                raise SageError(f"GPU {index} is not among the GPUs {self.describe()} shows")
            values.extend(named)
        return ",".join(values)

    def child_env(self, indices: Sequence[int]) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES (and, with GPUs, CUDA_DEVICE_ORDER) for a child on `indices`.

        A child without GPUs gets an empty CUDA_VISIBLE_DEVICES: were NVML broken on a GPU
        machine, it must not take every GPU of a shared box.
        """
        env = {VISIBLE: self.child_value(indices)}
        if indices:
            env[ORDER] = PCI_BUS_ID
        return env

    def base_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """A whole environment for a child that must see the user's view of the GPUs (the
        queue keeper): `environ` (default: the studio's, without temporary changes) with
        CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER as captured, removed where they were unset.
        """
        if environ is None:
            from sage_tui.core.child_env import outer_environ

            environ = outer_environ()
        env = dict(environ)
        for key, value in ((VISIBLE, self.raw), (ORDER, self.order)):
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _resolve(
        self, samples: Sequence[GpuSample], unread: tuple[int, ...]
    ) -> dict[int, tuple[Token, ...]]:
        """NVML index -> the entries naming it, following CUDA's list to where it ends."""
        tokens = self.tokens
        if tokens is None:
            return {sample.index: (sample.index,) for sample in samples}
        count = max([s.index + 1 for s in samples] + [i + 1 for i in unread], default=0)
        named: dict[int, tuple[Token, ...]] = {}
        for token in tokens:
            index = token if isinstance(token, int) else _match(token, samples)
            if index is None or index >= count:
                break  # CUDA shows no GPU from an entry it cannot find on
            if index in named and not token_is_mig(token):
                return {}  # CUDA hides every GPU when one is named twice
            named[index] = (*named.get(index, ()), token)
        with self._lock:
            self._named.clear()
            self._named.update(
                {i: tuple(t for t in ts if isinstance(t, str)) for i, ts in named.items()}
            )
        return named

    def _may_show(self, unread: tuple[int, ...]) -> bool:
        """Whether one of the `unread` GPUs may be in the scope (a UUID's GPU is unknown)."""
        tokens = self.tokens
        if tokens is None or any(isinstance(token, str) for token in tokens):
            return True
        return bool(set(unread) & set(tokens))


def token_is_mig(token: Token) -> bool:
    """Whether an entry names a MIG instance (several may share one NVML GPU)."""
    return isinstance(token, str) and token.startswith("MIG-")


_startup: GpuScope | None = None
_startup_lock = threading.Lock()


def startup_scope() -> GpuScope:
    """The scope of this process, captured from its environment the first time it is asked.

    The composition root asks first, at start-up; everything else shares that capture, so
    what the user set is what counts however the environment changes later.
    """
    global _startup
    with _startup_lock:
        if _startup is None:
            _startup = GpuScope.capture()
        return _startup


def gpus_expected(reason: str, scope: GpuScope, driver_gpus: Path, dev: Path) -> str | None:
    """Why GPUs are expected although NVML found no driver (`reason`), or None.

    They are when the user's CUDA_VISIBLE_DEVICES names GPUs, or when the kernel driver lists
    GPUs (`driver_gpus`, normally /proc/driver/nvidia/gpus) whose device nodes exist in `dev`.
    /proc/driver is not namespaced: a CPU-only container on a GPU host sees the host's list but
    has no /dev/nvidiaN, and is rightly a machine without GPUs.
    """
    if scope.names_gpus:
        return f"{reason}, but {scope.describe()} names GPUs; unset it to use the CPU"
    try:
        listed = sum(1 for _ in driver_gpus.iterdir())
        nodes = any(dev.glob("nvidia[0-9]*"))
    except OSError:
        return None
    if listed and nodes:
        return f"{reason}, but the kernel driver lists {listed} NVIDIA GPU(s)"
    return None


def _leading_number(text: str) -> int | None:
    """What ``strtoul`` reads at the start of `text`; None for nothing or a negative number."""
    digits = ""
    for char in text.lstrip("+"):
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits and not text.startswith("-") else None


def _match(token: str, samples: Sequence[GpuSample]) -> int | None:
    """The NVML index a UUID or MIG entry names, None when no single GPU matches."""
    if token.startswith("MIG-GPU-"):
        # The old MIG form names its parent GPU: MIG-GPU-<uuid>/<gi>/<ci>.
        candidates = [(s.index, s.uuid) for s in samples]
        token = token[len("MIG-") :].split("/")[0]
    elif token.startswith("MIG-"):
        candidates = [(s.index, mig) for s in samples for mig in s.mig_uuids]
    else:
        candidates = [(s.index, s.uuid) for s in samples]
    found = {index for index, uuid in candidates if uuid and uuid.startswith(token)}
    return found.pop() if len(found) == 1 else None
