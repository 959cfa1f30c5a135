"""The label values SpineSeg uses, with display names and colours.

One place for them: the phantom, training data checks, model headers and the
Slicer segment names all read this. Values follow the SPIDER-derived data set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple


@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: Tuple[int, int, int]  # 0-255 RGB

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["color"] = list(self.color)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "ClassInfo":
        return cls(int(d["value"]), str(d["name"]), tuple(int(c) for c in d.get("color", (128, 128, 128))))  # type: ignore[arg-type]


VERTEBRA = ClassInfo(1, "vertebra", (241, 214, 145))
DISC = ClassInfo(2, "intervertebral disc", (88, 106, 215))
CANAL = ClassInfo(3, "spinal canal", (244, 214, 49))
SPINE_CLASSES: Tuple[ClassInfo, ...] = (VERTEBRA, DISC, CANAL)
#: the single foreground class of binary models (union of all spine structures)
SPINE = ClassInfo(1, "spine", (241, 214, 145))


def classes_to_dicts(classes: Sequence[ClassInfo]) -> List[Dict[str, object]]:
    return [c.to_dict() for c in classes]
