"""nnU-Net v2's own predictor as a speed peer (used by ``benchmarks/inference.py --nnunet``).

nnU-Net plans its ``3d_fullres`` configuration from a data set's fingerprint, so this module lets
nnU-Net do exactly that: it writes a small raw data set of phantoms at the volume's geometry,
runs nnU-Net's fingerprint extraction and default ``ExperimentPlanner``, builds the planned
network with random weights (speed does not depend on the values) and times
``nnUNetPredictor.predict_single_npy_array`` on the image as nnU-Net's own SimpleITK reader
loads it, with nnU-Net's defaults: Gaussian tiles at step 0.5 and mirroring over all three axes
(the trainer's default for 3D configurations, 8 passes per tile).

Needs the ``bench`` extra (``pip install -e ".[bench]" torch==2.13.0``: naming torch keeps the
CPU build); nnunetv2 is not part of SpineSeg's install.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

#: nnU-Net's dataset id for the benchmark's throw-away raw/preprocessed folders
DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_SpineSegBench"


def plan_3d_fullres(folder: Path, image_paths: Sequence[Path], label_paths: Sequence[Path]) -> Dict[str, Any]:
    """nnU-Net's own plans (``nnUNetPlans.json`` as a dict) for a raw data set of these image/label files."""
    import shutil

    raw, pre = folder / "raw", folder / "preprocessed"
    os.environ["nnUNet_raw"], os.environ["nnUNet_preprocessed"] = str(raw), str(pre)
    os.environ["nnUNet_results"] = str(folder / "results")
    ds = raw / DATASET_NAME
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(zip(image_paths, label_paths)):
        shutil.copyfile(img, ds / "imagesTr" / f"case{i:03d}_0000.nii.gz")
        shutil.copyfile(lab, ds / "labelsTr" / f"case{i:03d}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "vertebra": 1, "disc": 2, "canal": 3},
        "numTraining": len(image_paths), "file_ending": ".nii.gz"}))
    # nnunetv2.paths reads the environment at import: import only now
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=False, clean=True, verbose=False,
                         show_progress_bar=False)
    plan_experiments([DATASET_ID])
    return json.loads((pre / DATASET_NAME / "nnUNetPlans.json").read_text())


def time_predictor(plans: Dict[str, Any], image_path: Path, threads: int, tiles: int = 0
                   ) -> Tuple[float, Dict[str, Any]]:
    """Seconds for nnUNetPredictor to segment ``image_path`` (read with nnU-Net's reader, then predicted).

    ``tiles`` > 0: the predictor runs only its first ``tiles`` sliding-window tiles (everything
    else in full) and the sliding-window part is scaled by all tiles / timed tiles: on a CPU the
    full run of a 3d_fullres network takes long, and every tile costs the same.
    """
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(threads)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    dataset_json = json.loads((Path(os.environ["nnUNet_raw"]) / DATASET_NAME / "dataset.json").read_text())
    lm = pm.get_label_manager(dataset_json)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, lm.num_segmentation_heads,
                                 allow_init=True, deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    mirror_axes = (0, 1, 2)
    predictor.manual_initialization(net, pm, cm, [net.state_dict()], dataset_json, "nnUNetTrainer", mirror_axes)
    seen: Dict[str, Any] = {"window_s": 0.0}
    all_slicers = predictor._internal_get_sliding_window_slicers
    sliding = predictor._internal_predict_sliding_window_return_logits

    def some_slicers(image_size):
        slicers = all_slicers(image_size)
        seen["tiles"] = len(slicers)
        return slicers[:tiles] if tiles > 0 else slicers

    def timed_sliding(data, slicers, *rest):
        seen["timed_tiles"] = len(slicers)
        t = time.perf_counter()
        out = sliding(data, slicers, *rest)
        seen["window_s"] += time.perf_counter() - t
        return out

    predictor._internal_get_sliding_window_slicers = some_slicers
    predictor._internal_predict_sliding_window_return_logits = timed_sliding
    t = time.perf_counter()
    image, props = SimpleITKIO().read_images([str(image_path)])
    predictor.predict_single_npy_array(image, props, None, None, False)
    seconds = time.perf_counter() - t
    scale = seen["tiles"] / max(1, seen["timed_tiles"])
    total = seconds - seen["window_s"] + seen["window_s"] * scale
    info = {"patch": [int(v) for v in cm.patch_size], "spacing": [float(v) for v in cm.spacing],
            "mirror_axes": list(mirror_axes), "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "tiles": int(seen["tiles"]), "timed_tiles": int(seen["timed_tiles"]), "measured_s": seconds}
    return total, info
