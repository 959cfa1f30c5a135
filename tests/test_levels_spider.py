"""Read-out of real SPIDER label maps: instance counts agree with the labels' connected components."""
from __future__ import annotations

import pytest
import SimpleITK as sitk

from script_modules import load_script
from spineseg.levels import read_levels


@pytest.mark.shared_data
@pytest.mark.parametrize("case", ["018", "034", "065"])
def test_instances_match_ground_truth_components(spider_dir, case):
    agreement = load_script("levels_agreement")
    label = sitk.ReadImage(str(spider_dir / f"spider_{case}_label.nii.gz"))
    gt = agreement.gt_components(label)
    result = read_levels(label)
    assert len(result.names("disc")) == len(gt["disc_ids"])
    assert len(result.names("vertebra")) == gt["bodies"]
    assert result.anchor == "L5-S1 disc" and "L5-S1" in result.names()  # the shared labels leave the sacrum out
    match = agreement.match_discs(gt, result.canonical_labels)
    assert match["one"] == len(gt["disc_ids"]) and match["missed"] == 0 and match["extra"] == 0
