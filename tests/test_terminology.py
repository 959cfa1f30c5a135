"""Class -> Slicer segment mapping: names, colours, IDs and SNOMED CT terminology strings."""
from __future__ import annotations

import pytest

from spineseg.labels import SPINE, SPINE_CLASSES
from spineseg.terminology import (
    TYPE_CODES,
    label_to_segment_ids,
    normalize_name,
    segment_id,
    segment_specs,
    terminology_entry,
    type_code,
)

# Expected strings written out in full: the format Slicer's vtkSegment default uses
# ("context~SCT^85756007^Tissue~SCT^85756007^Tissue~^^~Anatomic codes - DICOM master list~^^~^^").
EXPECTED = {
    "vertebra": "Segmentation category and type - SpineSeg~SCT^123037004^Anatomical Structure"
                "~SCT^51282000^Vertebra~^^~Anatomic codes - DICOM master list~^^~^^",
    "intervertebral disc": "Segmentation category and type - SpineSeg~SCT^123037004^Anatomical Structure"
                           "~SCT^360499006^Intervertebral disc~^^~Anatomic codes - DICOM master list~^^~^^",
    "spinal canal": "Segmentation category and type - SpineSeg~SCT^123037004^Anatomical Structure"
                    "~SCT^61853006^Spinal canal~^^~Anatomic codes - DICOM master list~^^~^^",
    "spine": "Segmentation category and type - SpineSeg~SCT^123037004^Anatomical Structure"
             "~SCT^421060004^Spine~^^~Anatomic codes - DICOM master list~^^~^^",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_terminology_entry_strings(name):
    entry = terminology_entry(name)
    assert entry == EXPECTED[name]
    parts = entry.split("~")
    assert len(parts) == 7  # context, category, type, modifier, anatomic context, region, region modifier
    assert all(p.count("^") == 2 for i, p in enumerate(parts) if i not in (0, 4))


def test_every_spineseg_class_has_a_code():
    for c in (*SPINE_CLASSES, SPINE):
        assert type_code(c.name) is not None, c.name
    assert {c.value for c in TYPE_CODES.values()} == {"51282000", "360499006", "61853006", "421060004"}


@pytest.mark.parametrize("alias,name", [("Disc", "intervertebral disc"), ("spinal_canal", "spinal canal"),
                                        ("Vertebrae", "vertebra"), ("  Intervertebral-Disc ", "intervertebral disc")])
def test_aliases(alias, name):
    assert normalize_name(alias) == name
    assert terminology_entry(alias) == EXPECTED[name]


def test_unknown_class_has_no_entry():
    assert terminology_entry("sacrum") is None
    assert type_code("") is None


def test_segment_specs_from_labels_module():
    specs = segment_specs(SPINE_CLASSES)
    assert [s.value for s in specs] == [1, 2, 3]
    assert [s.name for s in specs] == ["vertebra", "intervertebral disc", "spinal canal"]
    assert [s.segment_id for s in specs] == ["vertebra", "intervertebral_disc", "spinal_canal"]
    assert specs[1].color == pytest.approx((88 / 255, 106 / 255, 215 / 255))
    assert all(0.0 <= v <= 1.0 for s in specs for v in s.color)
    assert specs[2].terminology == EXPECTED["spinal canal"]


def test_segment_specs_from_header_dicts_sorted_with_gaps():
    classes = [{"value": 4, "name": "sacrum", "color": [300, -5, 10]}, {"value": 1, "name": "spine", "color": [1, 2, 3]}]
    specs = segment_specs(classes)
    assert [s.value for s in specs] == [1, 4]
    assert specs[1].color == (1.0, 0.0, 10 / 255)  # clamped to 0..255 first
    assert specs[1].terminology is None
    assert label_to_segment_ids(specs) == ["spine", "", "", "sacrum"]


def test_binary_model_single_segment():
    specs = segment_specs([SPINE])
    assert label_to_segment_ids(specs) == ["spine"]
    assert specs[0].terminology == EXPECTED["spine"]


def test_duplicate_ids_and_bad_values():
    specs = segment_specs([{"value": 1, "name": "disc"}, {"value": 2, "name": "Disc"}])
    assert [s.segment_id for s in specs] == ["disc", "disc_2"]
    with pytest.raises(ValueError, match="more than one class"):
        segment_specs([{"value": 1, "name": "a"}, {"value": 1, "name": "b"}])
    with pytest.raises(ValueError, match="start at 1"):
        segment_specs([{"value": 0, "name": "background"}])
    assert label_to_segment_ids([]) == []
    assert segment_id("  ***  ") == "segment"


def test_shipped_terminology_context_matches_the_codes():
    """The context file the module loads into Slicer names the same context and holds every code used."""
    import json
    from pathlib import Path

    from spineseg.terminology import ANATOMICAL_STRUCTURE, CATEGORY_CONTEXT

    path = (Path(__file__).resolve().parents[1] / "SpineSegUNet" / "Resources" / "Terminology"
            / "SegmentationCategoryTypeModifier-SpineSeg.term.json")
    data = json.loads(path.read_text())
    assert data["SegmentationCategoryTypeContextName"] == CATEGORY_CONTEXT
    (category,) = data["SegmentationCodes"]["Category"]
    assert (category["CodingSchemeDesignator"], category["CodeValue"], category["CodeMeaning"]) == ANATOMICAL_STRUCTURE
    types = {(t["CodingSchemeDesignator"], t["CodeValue"], t["CodeMeaning"]) for t in category["Type"]}
    from spineseg.levels.segments import DISC_CODES, SACRUM_CODE, VERTEBRA_CODES, disc_code  # per-level segments

    levels = {("SCT", code, f"{name} vertebra") for name, code in VERTEBRA_CODES.items()} | {
        (SACRUM_CODE.scheme, SACRUM_CODE.value, SACRUM_CODE.meaning)} | {
        (c.scheme, c.value, c.meaning) for c in map(disc_code, DISC_CODES)}
    assert ("SCT", "84020006", "L4/L5 disc") in levels and len(set(DISC_CODES.values())) == len(DISC_CODES)
    assert types == {(c.scheme, c.value, c.meaning) for c in TYPE_CODES.values()} | levels
