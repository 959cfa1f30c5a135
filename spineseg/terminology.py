"""Label class -> Slicer segment: name, colour, segment ID and DICOM/SNOMED CT terminology.

Pure Python (no Slicer), so the mapping the SpineSegUNet module applies to its
segmentation node is tested here. The terminology entry is the string Slicer
stores in a segment's ``TerminologyEntry`` tag (``vtkSegment.SetTag`` in Slicer
5.8, ``vtkSegment.SetTerminology`` in later versions)::

    context~category~type~typeModifier~anatomicContext~region~regionModifier

with each coded item written ``scheme^value^meaning`` (empty: ``^^``).

Codes (SNOMED CT, scheme designator ``SCT``), all in category 123037004
"Anatomical Structure":

- vertebra 51282000 "Vertebra" and spine 421060004 "Spine" (both also in Slicer's
  "Segmentation category and type - DICOM master list");
- intervertebral disc 360499006 "Intervertebral disc" (as in the SNOMED mapping
  of the TotalSegmentator Slicer extension);
- spinal canal 61853006 "Spinal canal" (SNOMED "Spinal canal structure", as in
  AAPM TG-263 / HL7 mCODE).

Disc and canal are not in Slicer's DICOM master list, so the entries name SpineSeg's own
terminology context, which the SpineSeg UNet module ships
(``SpineSegUNet/Resources/Terminology/SegmentationCategoryTypeModifier-SpineSeg.term.json``)
and loads into Slicer's Terminologies logic: every segment then resolves to a real entry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from spineseg.labels import ClassInfo

#: the context name in SpineSeg's terminology file (tests check that the two agree)
CATEGORY_CONTEXT = "Segmentation category and type - SpineSeg"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE: Tuple[str, str, str] = ("SCT", "123037004", "Anatomical Structure")


@dataclass(frozen=True)
class Code:
    """One coded concept: (coding scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str

    def serialize(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


#: SNOMED CT type codes of the structures SpineSeg models segment, keyed by normalised class name
TYPE_CODES: Dict[str, Code] = {
    "vertebra": Code("SCT", "51282000", "Vertebra"),
    "intervertebral disc": Code("SCT", "360499006", "Intervertebral disc"),
    "spinal canal": Code("SCT", "61853006", "Spinal canal"),
    "spine": Code("SCT", "421060004", "Spine"),
}

_ALIASES = {
    "vertebrae": "vertebra",
    "vertebral body": "vertebra",
    "disc": "intervertebral disc",
    "discs": "intervertebral disc",
    "disk": "intervertebral disc",
    "intervertebral disk": "intervertebral disc",
    "intervertebral discs": "intervertebral disc",
    "canal": "spinal canal",
    "vertebral canal": "spinal canal",
    "spinal column": "spine",
}


def normalize_name(name: str) -> str:
    """Lower case, ``_`` and ``-`` read as spaces, common synonyms mapped to one name."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    return _ALIASES.get(key, key)


def type_code(name: str) -> Optional[Code]:
    """The SNOMED CT code for a class name, or None when SpineSeg has no code for it."""
    return TYPE_CODES.get(normalize_name(name))


def terminology_entry(name: str) -> Optional[str]:
    """Serialized Slicer terminology entry for a class name; None for names without a known code
    (the caller then leaves Slicer's default entry in place)."""
    code = type_code(name)
    if code is None:
        return None
    category = Code(*ANATOMICAL_STRUCTURE)
    return "~".join([CATEGORY_CONTEXT, category.serialize(), code.serialize(), "^^",
                     ANATOMIC_CONTEXT, "^^", "^^"])


def segment_id(name: str) -> str:
    """A stable segment ID from a class name ("intervertebral disc" -> "intervertebral_disc")."""
    sid = re.sub(r"[^0-9A-Za-z]+", "_", name.strip()).strip("_").lower()
    return sid or "segment"


@dataclass(frozen=True)
class SegmentSpec:
    """Everything the Slicer module needs to create one segment for one label value."""

    value: int
    segment_id: str
    name: str
    color: Tuple[float, float, float]  # 0-1 RGB, as vtkSegment.SetColor wants
    terminology: Optional[str]


ClassLike = Union[ClassInfo, Mapping[str, object]]


def _as_class(c: ClassLike) -> ClassInfo:
    return c if isinstance(c, ClassInfo) else ClassInfo.from_dict(dict(c))


def segment_specs(classes: Sequence[ClassLike]) -> List[SegmentSpec]:
    """Segments for a model's classes (``ClassInfo`` or header/CLI dicts ``{"value","name","color"}``).

    Raises ValueError for label values below 1 or repeated values: the module maps
    label value v to the v-th segment ID, so values must be unique and positive.
    """
    specs: List[SegmentSpec] = []
    seen_values = set()
    seen_ids: Dict[str, int] = {}
    for raw in classes:
        c = _as_class(raw)
        if c.value < 1:
            raise ValueError(f"class {c.name!r} has label value {c.value}; segment label values start at 1")
        if c.value in seen_values:
            raise ValueError(f"label value {c.value} is used by more than one class")
        seen_values.add(c.value)
        sid = segment_id(c.name)
        if sid in seen_ids:  # two classes with names that map to one ID
            sid = f"{sid}_{c.value}"
        seen_ids[sid] = c.value
        color = tuple(min(255, max(0, int(v))) / 255.0 for v in c.color)
        specs.append(SegmentSpec(c.value, sid, c.name, color, terminology_entry(c.name)))  # type: ignore[arg-type]
    return sorted(specs, key=lambda s: s.value)


def label_to_segment_ids(specs: Sequence[SegmentSpec]) -> List[str]:
    """Segment ID per label value 1..max, "" where no class uses that value.

    This is the ``updatedSegmentIDs`` list of Slicer's
    ``vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode``, which maps
    label value i+1 to entry i and skips empty entries.
    """
    if not specs:
        return []
    ids = [""] * max(s.value for s in specs)
    for s in specs:
        ids[s.value - 1] = s.segment_id
    return ids
