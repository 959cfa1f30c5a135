"""Level names and per-level label values (one convention, written in the README).

- vertebrae as in VerSe: C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24, the sacrum
  (named ``S1``) = 26;
- a disc is 100 + the value of the vertebra above it (``L4-L5`` = 123, ``L5-S1`` = 124);
- the spinal canal is 201.

Names run cranial -> caudal in :data:`VERTEBRA_NAMES`; the read-out counts up from the
sacrum, so index arithmetic here is all it needs.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

VERTEBRA_NAMES: Tuple[str, ...] = tuple(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] + ["S1"])
SACRUM = "S1"
SACRUM_VALUE = 26
CANAL_NAME = "spinal canal"
CANAL_VALUE = 201
DISC_OFFSET = 100

_VALUES: Dict[str, int] = {name: i + 1 for i, name in enumerate(VERTEBRA_NAMES[:-1])}
_VALUES[SACRUM] = SACRUM_VALUE
_NAMES_BY_VALUE: Dict[int, str] = {v: k for k, v in _VALUES.items()}


def vertebra_value(name: str) -> int:
    """VerSe label value of a vertebra name (``L1`` -> 20, ``S1`` -> 26)."""
    try:
        return _VALUES[name]
    except KeyError:
        raise ValueError(f"unknown vertebra name {name!r}") from None


def disc_name(upper: str, lower: str) -> str:
    """``L4``, ``L5`` -> ``L4-L5``."""
    return f"{upper}-{lower}"


def disc_value(upper: str) -> int:
    """Label value of the disc below vertebra ``upper`` (100 + its VerSe value)."""
    return DISC_OFFSET + vertebra_value(upper)


def name_of_value(value: int) -> Optional[str]:
    """Structure name of a per-level label value, or None for values outside the convention."""
    if value == CANAL_VALUE:
        return CANAL_NAME
    if value in _NAMES_BY_VALUE:
        return _NAMES_BY_VALUE[value]
    upper = _NAMES_BY_VALUE.get(value - DISC_OFFSET)
    if upper is not None and upper != SACRUM:
        below = VERTEBRA_NAMES[VERTEBRA_NAMES.index(upper) + 1]
        return disc_name(upper, below)
    return None


def kind_of_value(value: int) -> Optional[str]:
    """``vertebra``, ``disc`` or ``canal`` for a per-level label value."""
    if value == CANAL_VALUE:
        return "canal"
    if value in _NAMES_BY_VALUE:
        return "vertebra"
    if name_of_value(value) is not None:
        return "disc"
    return None


def names_upwards(lowest: str, count: int) -> List[Optional[str]]:
    """Names of ``count`` vertebrae counted cranially from ``lowest`` (caudal first); None above C1."""
    i = VERTEBRA_NAMES.index(lowest)
    return [VERTEBRA_NAMES[i - k] if i - k >= 0 else None for k in range(count)]


def name_above(name: str) -> Optional[str]:
    """The vertebra cranial to ``name`` (``L1`` -> ``T12``), None above C1."""
    i = VERTEBRA_NAMES.index(name)
    return VERTEBRA_NAMES[i - 1] if i > 0 else None
