"""Per-level structures as Slicer segments: name, ID, colour (alternating between neighbours) and terminology.

Codes (SNOMED CT, category 123037004 "Anatomical Structure"): the vertebra codes are DICOM
PS3.16 CID 7603 "Vertebra", as the TotalSegmentator Slicer extension's terminology context has
them (C1..C7, T1..T12, L1..L5 vertebra, sacrum 54735007; Slicer's own DICOM master list has only
"Vertebra" and "Sacrum"); each disc from C2-C3 to L5-S1 its code from DICOM PS3.16 CID 7604 "Intervertebral
Disc" (``L4/L5 disc`` 84020006, ...; a disc without one, such as C1-C2, gets 360499006
"Intervertebral disc"), the canal 61853006 "Spinal canal" (as :mod:`spineseg.terminology`). Every code
is also in SpineSeg's terminology context (SpineSegUNet/Resources/Terminology, checked by
tests/test_terminology.py), so each segment resolves to an entry in Slicer.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from spineseg.labels import ClassInfo
from spineseg.levels.result import Structure
from spineseg.terminology import ANATOMICAL_STRUCTURE, ANATOMIC_CONTEXT, CATEGORY_CONTEXT, Code, TYPE_CODES, segment_id

VERTEBRA_CODES: Dict[str, str] = {
    "C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003",
    "C6": "36054005", "C7": "87391001",
    "T1": "64864005", "T2": "53733008", "T3": "1626008", "T4": "73071006", "T5": "56401006",
    "T6": "45296009", "T7": "62487009", "T8": "11068009", "T9": "82687006", "T10": "7610001",
    "T11": "12989004", "T12": "23215003",
    "L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
}
SACRUM_CODE = Code("SCT", "54735007", "Sacrum")
#: SNOMED CT codes of the discs by the read-out's disc name (DICOM PS3.16 CID 7604; meaning "L4/L5 disc")
DISC_CODES: Dict[str, str] = {
    "C2-C3": "1078209008", "C3-C4": "58820006", "C4-C5": "49400002", "C5-C6": "73959003", "C6-C7": "75095006",
    "C7-T1": "37414007", "T1-T2": "40908007", "T2-T3": "6004007", "T3-T4": "2620004", "T4-T5": "82965004",
    "T5-T6": "72692000", "T6-T7": "74401007", "T7-T8": "28693002", "T8-T9": "9188009", "T9-T10": "113209001",
    "T10-T11": "34959001", "T11-T12": "1537001", "T12-L1": "76206002", "L1-L2": "80064006", "L2-L3": "67459009",
    "L3-L4": "62551000", "L4-L5": "84020006", "L5-S1": "715056000",
}


def disc_code(name: str) -> Code:
    """The code of one disc (``L4-L5`` -> ``L4/L5 disc``), the general disc code where CID 7604 has none."""
    if name in DISC_CODES:
        return Code("SCT", DISC_CODES[name], name.replace("-", "/") + " disc")
    return TYPE_CODES["intervertebral disc"]

#: two colours per kind (0-255 RGB), alternated from one level to the next so neighbours differ
COLOURS: Dict[str, Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = {
    "vertebra": ((241, 214, 145), (204, 142, 86)),
    "disc": ((88, 106, 215), (111, 184, 210)),
    "canal": ((244, 214, 49), (244, 214, 49)),
}


def type_code(structure: Structure) -> Code:
    """The SNOMED CT type code of one per-level structure."""
    if structure.kind == "vertebra":
        if structure.name == "S1":
            return SACRUM_CODE
        return Code("SCT", VERTEBRA_CODES[structure.name], f"{structure.name} vertebra")
    if structure.kind == "disc":
        return disc_code(structure.name)
    return TYPE_CODES["spinal canal"]


def terminology_entry(structure: Structure) -> str:
    """Slicer's serialized terminology entry (``context~category~type~...``) for a structure."""
    return "~".join([CATEGORY_CONTEXT, Code(*ANATOMICAL_STRUCTURE).serialize(), type_code(structure).serialize(),
                     "^^", ANATOMIC_CONTEXT, "^^", "^^"])


def segment_colours(structures: List[Structure]) -> List[Tuple[int, int, int]]:
    """One colour per structure; vertebrae and discs alternate along the spine (structures come cranial first)."""
    count = {"vertebra": 0, "disc": 0, "canal": 0}
    out = []
    for s in structures:
        out.append(COLOURS[s.kind][count[s.kind] % 2])
        count[s.kind] += 1
    return out


def segment_ids(structures: List[Structure]) -> List[str]:
    """Stable segment IDs from the names (``L4-L5`` -> ``l4_l5``)."""
    return [segment_id(s.name) for s in structures]


def level_classes(structures: List[Structure]) -> List[ClassInfo]:
    """One class per structure (per-level value, name, alternating colour), e.g. for an overlay."""
    return [ClassInfo(s.label, s.name, colour) for s, colour in zip(structures, segment_colours(structures))]
