"""When training has gone wrong in numbers: a loss or gradient norm that is NaN or infinite.

The runner checks every logged step with :func:`divergence` and fails the job on that step
(no checkpoint of the broken weights); the fake runner in the tests uses the same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def not_finite(value: Any) -> str | None:
    """ "NaN", "inf" or "-inf" when `value` is a number that is not finite, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return None


def divergence(logs: Mapping[str, Any], step: int, learning_rate: float) -> tuple[str, str] | None:
    """(reason, suggestion) when a logged loss or gradient norm is NaN or infinite, else None.

    Past that point every weight update is garbage, so the job stops rather than train on.
    """
    for key, what in (("loss", "loss"), ("grad_norm", "the gradient norm")):
        word = not_finite(logs.get(key))
        if word is not None:
            return (
                f"{what} became {word} at step {step}",
                f"try a lower learning rate (now {learning_rate:g})",
            )
    return None
