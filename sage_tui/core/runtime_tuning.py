"""Process-level tuning that keeps the studio's event loop responsive around the engine.

Stdlib only, no Textual. The application layer wraps each engine start (first load, reload,
switch of base model) in `engine_starting()`, or, where it cannot wrap the start, calls
`tune_after_engine_start()` once the engine serves. Measured with bench/ui_lag.py on the
project's 2-core CPU machine (BENCHMARKS.md, "UI responsiveness").

Why the garbage collector: CPython's full (generation 2) collection walks every tracked object
while holding the GIL, so whichever thread triggers it, the event loop stops for as long as it
takes. Once vLLM or torch + transformers are imported and an engine is built the process holds
millions of long-lived objects, and a full collection takes 0.2-0.4 s during the load (in the
loading thread, each one longer as the heap grows) and 0.7-1.2 s afterwards, while a reply
streams (the reply's allocations trigger it on the loop itself).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

LOADING_GEN2_THRESHOLD = 1_000_000
"""Third value of `gc.set_threshold` while an engine loads: in effect no full collection."""
SERVING_GEN2_THRESHOLD = 100
"""Third value of `gc.set_threshold` once an engine serves (CPython's default is 10)."""


@contextmanager
def engine_starting() -> Iterator[None]:
    """Hold full garbage collections off while an engine is imported and built, then call
    `tune_after_engine_start()` (also when the start failed: what was imported stays).

    Importing vLLM or transformers creates hundreds of thousands of objects, nearly all of
    which live as long as the process (modules, classes, functions, configs); every full
    collection during that walks all of them again. Collections of generations 0 and 1 go on
    as usual (they walk only young objects and take well under a millisecond), so short-lived
    cycles are still freed; only the expensive walk of the old objects waits until they are
    frozen at the end.
    """
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, LOADING_GEN2_THRESHOLD))
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)
        tune_after_engine_start()


def tune_after_engine_start() -> None:
    """Stop the garbage collector from walking the engine's heap while the user types.

    - `gc.freeze()` moves every object that exists now into a permanent generation that
      collections skip, so a later full collection walks only what was made since: measured
      while a reply streams, the worst stall fell from 1.2 s to under 0.1 s. It is cheap (it
      moves list heads; no collection) and safe to call again after a reload: the new engine's
      objects are frozen too. What is frozen is never freed, which suits objects that live as
      long as the process; garbage cycles still pending at that moment are kept as well, a
      bounded one-off cost per engine start. No `gc.collect()` first: that collection is
      itself the stall being avoided.
    - gen2 threshold 100 (instead of 10): a streaming reply allocates fast (Textual segments,
      Markdown tokens, vLLM outputs), which triggers a full collection every few seconds.
      After the freeze each one is short, but 10x fewer of them keep what does accumulate
      later (an adapter load, a second model's imports) from costing a stall as often. CPython
      also skips a full collection until the objects that survived since the last one exceed
      a quarter of the long-lived ones, so memory held by real cycles stays bounded.
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, SERVING_GEN2_THRESHOLD))
