"""Numbers read from run files and progress events, which may be missing, text, null or NaN."""
from __future__ import annotations

import math
from typing import Any


def number(value: Any) -> float:
    """``value`` as a finite float; NaN when it is missing, not a number, or infinite (shown as "n/a")."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return x if math.isfinite(x) else float("nan")
