"""Sharing a CPU-only host's cores between the inference engine and training runners.

On a host without GPUs the engine and a fine-tuning job both compute on the CPU, and both use
OpenMP thread teams that wait at a barrier after every parallel region: a team with one thread
on a core another process is busy on runs at the speed of that thread. Measured on a 2-core
host (bench/ui_lag.py): vLLM binds its worker to core 0, an unrestricted runner spreads two
threads over both cores, and while a reply streams the job made one step in 86 s (17 steps in
40 s without a reply). Giving each its own cores keeps both moving.

`share_cpus` decides (a pure function, table-tested); `engine_env` and `runner_env` turn the
decision into the environment variables a child process reads; `apply_runner_share` is what
the runner calls first thing. Nothing here imports torch at module level.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

TRAIN_CPUS_ENV = "SAGE_TRAIN_CPUS"
"""CPU list ("1", "2-3") a training runner pins itself to; unset: all the cores it may use."""
VLLM_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
"""vLLM-CPU's own setting: the cores its worker's OpenMP threads are bound to ("auto" unset)."""


@dataclass(frozen=True)
class CpuShare:
    """Which cores each side gets; None means no restriction (all the host allows)."""

    engine: tuple[int, ...] | None
    runner: tuple[int, ...] | None


NO_SHARE = CpuShare(None, None)


def share_cpus(cpus: Iterable[int], *, gpu: bool, engine: bool, jobs: bool) -> CpuShare:
    """Split `cpus` (the cores this process may use) between the engine and the runners.

    Nothing is split on a GPU host (the heavy work is on the GPUs), on a single core (nothing
    to split), or when only one side runs (it may use every core). Otherwise the engine gets
    the lower half, rounded down (at least one core), and the runners the rest: training is the
    heavier, steadier load, while a reply at batch 1 is bound by memory bandwidth more than by
    cores. On 2 cores: engine (0,), runner (1,), which is also where vLLM's automatic binding
    puts its worker (it keeps the last core for its scheduler).
    """
    allowed = sorted(set(cpus))
    if gpu or len(allowed) < 2 or not (engine and jobs):
        return NO_SHARE
    half = len(allowed) // 2
    return CpuShare(tuple(allowed[:half]), tuple(allowed[half:]))


def allowed_cpus() -> tuple[int, ...]:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def format_cpus(cpus: Sequence[int]) -> str:
    """A CPU list as Linux and vLLM write it: (0, 1, 2, 5) -> "0-2,5"."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in [*ordered, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


def parse_cpus(text: str) -> tuple[int, ...]:
    """Read a CPU list ("0-2,5"); ValueError naming the text when it is not one."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            low, dash, high = part.partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if first < 0 or last < first:
                raise ValueError
            cpus.update(range(first, last + 1))
    except ValueError:
        raise ValueError(f"{text!r} is not a CPU list (like 1 or 0-3,6)") from None
    if not cpus:
        raise ValueError(f"{text!r} names no CPU")
    return tuple(sorted(cpus))


def runner_env(
    *,
    gpu: bool,
    engine: bool,
    cpus: Iterable[int] | None = None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Variables to add to a training runner's environment: {"SAGE_TRAIN_CPUS": "1"} or {}.

    `gpu`: the job trains on a GPU; `engine`: an engine is running (or loading) on the CPU.
    A value the user set in `env` is left alone.
    """
    if TRAIN_CPUS_ENV in env:
        return {}
    share = share_cpus(allowed_cpus() if cpus is None else cpus, gpu=gpu, engine=engine, jobs=True)
    return {TRAIN_CPUS_ENV: format_cpus(share.runner)} if share.runner else {}


def engine_env(
    *,
    gpu: bool,
    jobs: bool = True,
    cpus: Iterable[int] | None = None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Variables for vLLM-CPU's EngineCore and workers: {"VLLM_CPU_OMP_THREADS_BIND": "0"} or {}.

    `jobs` defaults to True because vLLM binds its threads once, when it starts: a job started
    later could not make it move, so on a CPU host the engine keeps to its share from the start
    (on 2 cores that is exactly where vLLM's automatic binding puts it anyway). A value the
    user set in `env` is left alone.
    """
    if VLLM_BIND_ENV in env:
        return {}
    share = share_cpus(allowed_cpus() if cpus is None else cpus, gpu=gpu, engine=True, jobs=jobs)
    return {VLLM_BIND_ENV: format_cpus(share.engine)} if share.engine else {}


def engine_threads(*, gpu: bool, jobs: bool, cpus: Iterable[int] | None = None) -> int | None:
    """Torch threads for an engine inside this process (transformers) while `jobs` run, or
    None for torch's default. Unlike vLLM's binding this can change at any time."""
    share = share_cpus(allowed_cpus() if cpus is None else cpus, gpu=gpu, engine=True, jobs=jobs)
    return len(share.engine) if share.engine else None


def apply_engine_threads(count: int | None) -> int | None:
    """Size the torch thread pool of an engine in this process (transformers): `count`
    threads, or one per allowed core when None (no job to share with). Torch applies it to
    threads at their first parallel work, and the transformers engine starts a thread per
    reply, so it holds from the next reply on. Does nothing before torch is imported (no
    engine of that kind runs); returns the count set, or None then."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = count or len(allowed_cpus())
    torch.set_num_threads(threads)
    return threads


def apply_runner_share(
    env: Mapping[str, str] = os.environ,
    *,
    set_affinity: Callable[[int, Iterable[int]], None] | None = None,
) -> tuple[int, ...] | None:
    """Pin this process to `SAGE_TRAIN_CPUS` and size its thread pools to match.

    Call it before torch starts its threads: it sets OMP_NUM_THREADS (which torch reads when
    it is imported) and, if torch is already imported, `torch.set_num_threads` too. Cores the
    process may not use are dropped from the list. Returns the cores, or None when the variable
    is unset. ValueError when it is not a CPU list or names no usable core.
    """
    raw = env.get(TRAIN_CPUS_ENV, "").strip()
    if not raw:
        return None
    wanted = parse_cpus(raw)
    usable = tuple(cpu for cpu in wanted if cpu in set(allowed_cpus()))
    if not usable:
        raise ValueError(f"{TRAIN_CPUS_ENV}={raw!r} names no core this process may use")
    if set_affinity is None and hasattr(os, "sched_setaffinity"):
        set_affinity = os.sched_setaffinity
    if set_affinity is not None:
        set_affinity(0, usable)
    threads = str(len(usable))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = threads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(len(usable))
    return usable
