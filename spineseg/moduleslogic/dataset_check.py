"""A training folder checked case by case before anything runs, as ``spineseg train`` will check it
(its own case discovery and checks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from spineseg.errors import InputError
from spineseg.labels import SPINE_CLASSES
from spineseg.training.data import find_cases, read_case

PathLike = Union[str, Path]


@dataclass
class DatasetSummary:
    """What the panel shows about a training folder before anything runs."""

    folder: Path
    cases: List[str]
    classes: List[int]
    problems: List[str]  # one line per problem, naming the case
    details: Dict[str, str] = field(default_factory=dict)  # case -> "size, spacing, label values"

    @property
    def ok(self) -> bool:
        return bool(self.cases) and not self.problems

    def text(self) -> str:
        lines = [f"{len(self.cases)} case(s) in {self.folder}"]
        if self.classes:
            lines.append("label values: " + ", ".join(str(v) for v in self.classes))
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"{case}: {self.details[case]}" for case in self.cases if case in self.details]
        return "\n".join(lines)


def check_dataset(folder: PathLike, allowed_values: Optional[Sequence[int]] = None
                  ) -> Iterator[Tuple[float, "DatasetSummary"]]:
    """Check a training folder case by case, as ``spineseg train`` will (its own discovery and checks).

    A generator, so the panel can check one case per timer tick and stay responsive:
    yields ``(fraction done, summary so far)``; the last summary is complete. A folder
    problem (no pairs, an unpaired file) ends the check with that one problem.
    """
    allowed = [c.value for c in SPINE_CLASSES] if allowed_values is None else list(allowed_values)
    summary = DatasetSummary(Path(folder), [], [], [])
    try:
        cases = find_cases(folder)
    except InputError as exc:
        summary.problems.append(str(exc))
        yield 1.0, summary
        return
    summary.cases = [c.id for c in cases]
    values: set = set()
    for i, case in enumerate(cases):
        try:
            image, _, present = read_case(case, allowed)
        except InputError as exc:
            summary.problems.append(str(exc))
        else:
            values.update(present)
            size = "x".join(str(n) for n in image.GetSize())
            spacing = "x".join(f"{v:.2f}" for v in image.GetSpacing())
            summary.details[case.id] = f"{size} voxels, {spacing} mm, labels {', '.join(map(str, present))}"
        summary.classes = sorted(v for v in values if v != 0)
        yield (i + 1) / len(cases), summary


def summarize_dataset(folder: PathLike, allowed_values: Optional[Sequence[int]] = None) -> DatasetSummary:
    """:func:`check_dataset` run to the end."""
    summary = None
    for _, summary in check_dataset(folder, allowed_values):
        pass
    assert summary is not None
    return summary
