"""Where a queued fine-tuning job runs: which GPU, or whether it has to wait.

A pure function over what is known at one moment (the host's GPUs with their free memory,
the GPUs that running jobs hold, and the user's limit of jobs per GPU), so the queue's rules
are tested without GPUs. GPUs are numbered as NVML numbers them (PCI bus order); the runner
is told its GPUs in the user's own terms (see `gpu_scope`), so it gets the GPUs placed here.
Which GPUs the user's CUDA_VISIBLE_DEVICES shows is decided by `gpu_scope` too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CPU: tuple[int, ...] = ()
"""The placement of a job on a host without GPUs."""


@dataclass(frozen=True)
class Device:
    """One GPU the queue may use."""

    index: int
    free_bytes: int
    hidden_by: str = ""
    """The user's limit in words ("CUDA_VISIBLE_DEVICES='1,3'") when it hides this GPU: the
    queue never uses it, and a job pinned to it is told why. "" for a GPU the queue may use."""


class PlacementError(ValueError):
    """A job that can never run here (it is pinned to a GPU the host does not have, or that
    the user's CUDA_VISIBLE_DEVICES hides)."""


def place(
    pinned: Sequence[int],
    devices: Sequence[Device],
    held: Iterable[tuple[int, ...]],
    jobs_per_device: int,
) -> tuple[int, ...] | None:
    """The GPUs a job runs on (``CPU`` without GPUs), or None while it has to wait.

    `pinned`: the GPUs the user chose for the job (empty: any one). `held`: the placements of
    the jobs running now. Each GPU runs at most `jobs_per_device` jobs at a time; on a host
    without GPUs that many jobs share the CPU. An unpinned job takes the GPU running the fewest
    jobs, then the one with the most free memory. PlacementError when `pinned` names a GPU
    that is not there.
    """
    held = list(held)
    if pinned:
        _check_not_hidden(pinned, devices)
    devices = [device for device in devices if not device.hidden_by]
    if not devices:
        if pinned:
            raise PlacementError(
                f"the job is pinned to GPU {_names(pinned)} but this host has no usable GPU"
            )
        return CPU if sum(1 for gpus in held if gpus == CPU) < jobs_per_device else None
    load = Counter(index for gpus in held for index in gpus)
    known = {device.index for device in devices}
    if pinned:
        missing = sorted(set(pinned) - known)
        if missing:
            raise PlacementError(
                f"the job is pinned to GPU {_names(missing)}, which this host does not have"
                f" (GPUs here: {_names(sorted(known))})"
            )
        if all(load[index] < jobs_per_device for index in pinned):
            return tuple(sorted(set(pinned)))
        return None
    free = [device for device in devices if load[device.index] < jobs_per_device]
    if not free:
        return None
    best = min(free, key=lambda d: (load[d.index], -d.free_bytes, d.index))
    return (best.index,)


def _check_not_hidden(pinned: Sequence[int], devices: Sequence[Device]) -> None:
    limits = {device.index: device.hidden_by for device in devices if device.hidden_by}
    hidden = sorted(set(pinned) & set(limits))
    if hidden:
        usable = sorted(device.index for device in devices if not device.hidden_by)
        raise PlacementError(
            f"the job is pinned to GPU {_names(hidden)}, which {limits[hidden[0]]} hides from"
            f" the studio (GPUs it may use: {_names(usable) or 'none'})"
        )


def parse_gpus(text: str) -> list[int]:
    """GPU numbers typed by a user ("1", "0,1"; "" or "any": none pinned); ValueError names
    what is wrong."""
    text = text.strip()
    if text.lower() in ("", "any"):
        return []
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"GPUs {text!r}: expected GPU numbers like 0 or 0,1")
    numbers = [int(part) for part in parts]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"GPUs {text!r}: a GPU is named twice")
    return numbers


def describe(gpus: tuple[int, ...] | None) -> str:
    """A placement in words for tables: "GPU 0", "GPU 0,1", "CPU", or "" when not placed."""
    if gpus is None:
        return ""
    return f"GPU {_names(gpus)}" if gpus else "CPU"


def _names(indices: Iterable[int]) -> str:
    return ",".join(str(index) for index in indices)
