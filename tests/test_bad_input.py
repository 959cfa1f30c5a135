"""Every bad input and fault we know of, tried as a hostile user would, in one table.

A row is ``(id, command line, exit code, fragment of the error line)``. ``{name}`` in the
command line is an input built by the function of that name in ``INPUTS`` (inside the
case's own folder); ``{out}`` is a path in that folder that nothing may create. Each row
checks: the exit code; stderr is exactly one ``spineseg: error:`` line (plus warnings)
holding the fragment, with no traceback or ITK/GDCM/torch text (file descriptor 2 is
captured, so C++ output counts); under ``--json`` the last stdout line is the JSON error
event; every file and folder in the case folder is byte-for-byte what it was (nothing
written or left behind, inputs and earlier results untouched). The next case is one line.

``{full}`` / ``{nearly_full}``: a folder on a filesystem with no / 8 KiB space left (a tiny
tmpfs where this process may mount one, else an injected short write, which is what ITK's
NIfTI writer leaves on a full disk). ``{old_result}`` is an earlier good result in ``{full}``.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from test_inference_fixtures import random_model  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- inputs


def _mr(size=(48, 40, 5), spacing=(0.8, 0.8, 4.4), dtype=np.float32, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    img = sitk.GetImageFromArray(rng.gamma(2.0, 100.0, size=size[::-1]).astype(dtype))
    img.SetSpacing(spacing)
    return img


def image(d: Path) -> Path:
    p = d / "image.nii.gz"
    sitk.WriteImage(_mr(), str(p))
    return p


def image_nrrd(d: Path) -> Path:
    p = d / "image.nrrd"
    sitk.WriteImage(_mr(), str(p))
    return p


def image_folder(d: Path) -> Path:
    """Two good inputs and, last in name order, one that is truncated."""
    f = d / "inputs"
    f.mkdir()
    sitk.WriteImage(_mr(seed=1), str(f / "a.nii.gz"))
    sitk.WriteImage(_mr(seed=2), str(f / "b.nii.gz"))
    _truncate_payload(f / "c.nii", _mr(seed=3), keep=0.5, compress=False)
    return f


def earlier_results(d: Path) -> Path:
    """The output folder of an earlier run over ``image_folder``: the user's results."""
    f = d / "results"
    f.mkdir()
    for name in ("a_seg.nii.gz", "b_seg.nii.gz"):
        (f / name).write_bytes(b"an earlier result " + name.encode())
    return f


def _truncate_payload(p: Path, img: sitk.Image, keep: float, compress: bool) -> Path:
    raw = p.with_name("full_" + p.name.replace(".gz", ""))
    sitk.WriteImage(img, str(raw))
    data = raw.read_bytes()
    raw.unlink()
    data = data[: 352 + int((len(data) - 352) * keep)]
    p.write_bytes(gzip.compress(data) if compress else data)
    return p


def short_nii(d: Path) -> Path:
    return _truncate_payload(d / "short.nii", _mr(), keep=0.5, compress=False)


def short_niigz(d: Path) -> Path:
    """A complete gzip stream around a payload missing half its voxels."""
    return _truncate_payload(d / "short.nii.gz", _mr(), keep=0.5, compress=True)


def huge_claim(d: Path) -> Path:
    """A few hundred bytes whose header claims 1000 x 1000 x 200 float32 voxels (800 MB)."""
    raw = d / "h.nii"
    sitk.WriteImage(sitk.Image(2, 2, 2, sitk.sitkFloat32), str(raw))
    header = bytearray(raw.read_bytes()[:352])
    raw.unlink()
    header[40:56] = struct.pack("<8h", 3, 1000, 1000, 200, 1, 1, 1, 1)
    p = d / "huge.nii.gz"
    p.write_bytes(gzip.compress(bytes(header)))
    return p


def nan_nii(d: Path) -> Path:
    arr = sitk.GetArrayFromImage(_mr())
    arr[2, 10, 10] = np.nan
    arr[3, 11, 11] = np.inf
    p = d / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    return p


def huge_values(d: Path) -> Path:
    """float64 intensities near 1e303: finite, but infinite once cast to float32."""
    p = d / "huge_values.nrrd"
    sitk.WriteImage(_mr(dtype=np.float64) * 1e300, str(p))
    return p


def sheared(d: Path) -> Path:
    img = _mr()
    img.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    p = d / "sheared.nrrd"
    sitk.WriteImage(img, str(p))
    return p


def metre_spacing(d: Path) -> Path:
    p = d / "metre.nrrd"
    sitk.WriteImage(_mr(spacing=(0.8, 0.8, 1e6)), str(p))
    return p


def dev_zero(d: Path) -> Path:
    p = d / "zero.nii.gz"
    p.symlink_to("/dev/zero")
    return p


def dev_urandom(d: Path) -> Path:
    p = d / "random.nrrd"
    p.symlink_to("/dev/urandom")
    return p


def label_nan(d: Path) -> Path:
    arr = np.zeros((5, 40, 48), np.float32)
    arr[2, 10:20, 10:20] = 1
    arr[2, 0, 0] = np.nan
    p = d / "label_nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    return p


def long_name(d: Path) -> str:
    return str(d / ("x" * 300 + ".nii.gz"))


def empty(d: Path) -> str:
    """What `-o "$OUT"` passes when OUT is unset."""
    return ""


def dicom_junk(d: Path) -> Path:
    """A folder of files named .dcm that are not DICOM (GDCM prints C++ warnings about it)."""
    f = d / "dicom"
    f.mkdir()
    (f / "a.dcm").write_bytes(b"not dicom")
    (f / "b.dcm").write_bytes(bytes(range(256)) * 8)
    return f


def data(d: Path) -> Path:
    """Two toy training cases."""
    from test_training_data import write_toy_cases

    return write_toy_cases(d / "data", 2) if not (d / "data").is_dir() else d / "data"


def background_data(d: Path) -> Path:
    """Two toy cases whose label maps are all background."""
    folder = data(d)
    for label in folder.glob("*_label.nii.gz"):
        empty = sitk.ReadImage(str(label)) * 0
        sitk.WriteImage(empty, str(label))
    return folder


def _labels(d: Path, name: str) -> Path:
    folder = d / name
    folder.mkdir()
    arr = np.zeros((5, 40, 48), np.uint8)
    arr[2, 10:20, 10:20] = 1
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(folder / "case0.nii.gz"))
    return folder


def pred_folder(d: Path) -> Path:
    return _labels(d, "pred")


def gt_folder(d: Path) -> Path:
    return _labels(d, "gt")


def pred_link(d: Path) -> Path:
    """Another name (a symbolic link) for the prediction folder."""
    p = d / "pred_link"
    p.symlink_to(pred_folder(d) if not (d / "pred").exists() else d / "pred", target_is_directory=True)
    return p


def image_pair(d: Path) -> Path:
    """A folder of two good images."""
    f = d / "images"
    f.mkdir()
    sitk.WriteImage(_mr(seed=1), str(f / "a.nii.gz"))
    sitk.WriteImage(_mr(seed=2), str(f / "b.nii.gz"))
    return f


def weights_link(d: Path) -> Path:
    """An .onnx name that is a link to the model's weights."""
    p = d / "alias.onnx"
    p.symlink_to(d / "model" / "model.safetensors")
    return p


def cv_run(d: Path) -> Path:
    """What 'spineseg cv' leaves for one model: config.json, split.json, <model>/report/metrics.json."""
    from spineseg.labels import SPINE_CLASSES
    from spineseg.metrics import case_metrics
    from spineseg.report import write_evaluation_report

    run = d / "cv_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"mode": "cv", "models": ["hybrid"], "folds": 2,
                                                 "base": {"preset": "default"}}))
    (run / "split.json").write_text(json.dumps({"seed": 0, "folds": [["a"], ["b"]]}))
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[1, 2:6, 2:6] = 1
    cases = {c: case_metrics(gt, gt, SPINE_CLASSES) for c in ("a", "b")}
    write_evaluation_report(run / "hybrid" / "report", cases, SPINE_CLASSES)
    return run


def _model_with(d: Path, name: str, change: Callable[[dict], None]) -> Path:
    folder = d / name
    shutil.copytree(d / "model", folder)
    header = json.loads((folder / "model.json").read_text())
    change(header)
    (folder / "model.json").write_text(json.dumps(header))
    return folder


def _onnx(file: str, sha: str = "0" * 64) -> Callable[[dict], None]:
    return lambda h: h.update(onnx={"file": file, "sha256": sha})


def model_wide(d: Path) -> Path:
    return _model_with(d, "wide", lambda h: h["architecture"]["hparams"].update(width=10 ** 6))


def model_width_0(d: Path) -> Path:
    return _model_with(d, "width0", lambda h: h["architecture"]["hparams"].update(width=0))


def model_huge_window(d: Path) -> Path:
    return _model_with(d, "window", lambda h: h.update(window=[12, 100000, 100000]))


def model_unknown_arch(d: Path) -> Path:
    return _model_with(d, "arch", lambda h: h["architecture"].update(name="transformer-xl"))


def model_onnx_absolute(d: Path) -> Path:
    return _model_with(d, "onnx_abs", _onnx(str(d / "model" / "model.safetensors")))


def model_onnx_parent(d: Path) -> Path:
    (d / "outside.onnx").write_bytes(b"an ONNX file outside the model folder")
    return _model_with(d, "onnx_up", _onnx("../outside.onnx"))


def model_onnx_no_sha(d: Path) -> Path:
    (d / "model" / "model.onnx").write_bytes(b"unverified")
    return _model_with(d, "onnx_nosha", _onnx("model.onnx", ""))


def train_run(d: Path) -> Path:
    """What 'spineseg train' leaves: a run folder, not a CV folder."""
    run = d / "train_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "hybrid", "seed": 0}))
    (run / "split.json").write_text(json.dumps({"seed": 0, "fold": None, "train": ["a"], "validation": ["b"]}))
    return run


def corrupt_config_run(d: Path) -> Path:
    run = d / "corrupt_run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "hybr')
    return run


RESUME = "--no-n4 --epochs 2 --device cpu"


def bad_checkpoint_run(d: Path) -> Path:
    """A run folder whose settings match the command line below but whose checkpoint is damaged."""
    from spineseg.cli import build_parser
    from spineseg.commands.training_args import config_from_args

    run = d / "bad_ckpt_run"
    args = build_parser().parse_args(["train", str(data(d)), "-o", str(run), *RESUME.split(), "--resume"])
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config_from_args(args, args.model).to_dict()))
    for name in ("split.json", "environment.json"):
        (run / name).write_text("{}")
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 a damaged checkpoint")
    return run


_HOLD = ("import sys, time; from pathlib import Path; from spineseg.training.run_lock import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)")


def locked_run(d: Path) -> Path:
    """A run folder another training holds (a second process with the lock)."""
    run = d / "busy_run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _FAULT.setdefault("procs", []).append(proc)  # type: ignore[union-attr]
    assert proc.stdout.readline().strip() == "held"  # type: ignore[union-attr]
    (run / "config.json").write_text(json.dumps({"model": "hybrid", "seed": 7}))  # what that run wrote so far
    (run / "log.jsonl").write_text('{"epoch": 1}\n')
    return run


def mount_tmpfs(folder: Path, size: str = "1m") -> bool:
    """Mount a tmpfs of ``size`` on ``folder`` where this process may (unmount with ``umount -l``)."""
    if os.environ.get("SPINESEG_TEST_NO_MOUNT") == "1":
        return False
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                       capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def fill_disk(folder: Path, free: int = 0) -> Path:
    """Fill the filesystem of ``folder`` with ``folder/.filler``, then give back ``free`` bytes."""
    filler = folder / ".filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - free))
    return filler


def _filled(d: Path, name: str, free: int, old: bool = False) -> Path:
    """A folder on a filesystem with ``free`` bytes left (a tmpfs), or a folder with injected short writes."""
    folder = d / name
    folder.mkdir()
    if _FAULT.get("mounts") is not None:
        if mount_tmpfs(folder):
            _FAULT["mounts"].append(folder)
        else:
            _FAULT["mounts"] = None
    if old:
        (folder / "seg.nii.gz").write_bytes(b"an earlier good result")
    if _FAULT.get("mounts"):
        fill_disk(folder, free)
    else:
        _FAULT["short_writes"] = free
    return folder


def full(d: Path) -> Path:
    return _filled(d, "full", 0)


def nearly_full(d: Path) -> Path:
    return _filled(d, "nearly_full", 8192)


def old_result(d: Path) -> Path:
    return _filled(d, "full", 0, old=True) / "seg.nii.gz"


INPUTS: Dict[str, Callable[[Path], object]] = {f.__name__: f for f in (
    image, image_nrrd, image_folder, earlier_results, short_nii, short_niigz, huge_claim, nan_nii, huge_values,
    sheared, metre_spacing, dev_zero, dev_urandom, label_nan, long_name, dicom_junk, data, model_wide,
    model_huge_window, model_unknown_arch, model_onnx_absolute, model_onnx_parent, model_onnx_no_sha, train_run,
    corrupt_config_run, bad_checkpoint_run, locked_run, full, nearly_full, old_result, pred_folder, gt_folder,
    pred_link, image_pair, weights_link, cv_run, model_width_0, empty)}
_FAULT: Dict[str, object] = {}

# ----------------------------------------------------------------------------- the table

SEG = "segment --device cpu --model {model}"
#: a training that, were it not refused, would end in seconds
TINY = "--no-n4 --epochs 1 --window 4 32 32 --windows-per-case 1 --batch 1 --hparam width=4 --workers 0 --device cpu"
CASES = [
    # truncated or lying files (issue 14 B2)
    ("info-short-nii", "info {short_nii}", 2, "truncated NIfTI"),
    ("info-short-niigz", "info {short_niigz}", 2, "truncated NIfTI"),
    ("info-huge-claim", "info {huge_claim}", 2, "1000x1000x200"),
    ("segment-short-nii", f"{SEG} {{short_nii}} -o {{out}}/seg.nii.gz", 2, "truncated NIfTI"),
    ("n4-short-niigz", "n4 {short_niigz} -o {out}/n4.nii.gz", 2, "truncated NIfTI"),
    # non-finite and overflowing intensities (B10)
    ("info-nan-nifti", "info {nan_nii}", 2, "2 NaN or infinite voxels"),
    ("n4-nan-nifti", "n4 {nan_nii} -o {out}/n4.nii.gz", 2, "NaN or infinite"),
    ("segment-float64-overflow", f"{SEG} {{huge_values}} -o {{out}}/seg.nii.gz", 2, "beyond the float32 range"),
    ("evaluate-nan-label", "evaluate {label_nan} {label_nan} -o {out}/report", 2, "NaN or infinite"),
    # geometry (B11, B9)
    ("segment-sheared", f"{SEG} {{sheared}} -o {{out}}/seg.nii.gz", 2, "not orthonormal"),
    ("n4-sheared", "n4 {sheared} -o {out}/n4.nii.gz", 2, "not orthonormal"),
    ("segment-spacing-1e6", f"{SEG} {{metre_spacing}} -o {{out}}/seg.nii.gz", 2, "spacing 0.8 x 0.8 x 1e+06 mm"),
    ("info-spacing-1e6", "info {metre_spacing}", 2, "outside"),
    # not files (B9)
    ("info-dev-zero", "info {dev_zero}", 2, "not a regular file"),
    ("segment-dev-urandom", f"{SEG} {{dev_urandom}} -o {{out}}/seg.nii.gz", 2, "not a regular file"),
    ("segment-output-name-300-bytes", f"{SEG} {{image}} -o {{long_name}}", 2, "name too long"),
    # full disk (B1): nothing replaced, exit 2 naming free space
    ("segment-full-disk", f"{SEG} {{image}} -o {{full}}/seg.nii.gz", 2, "free"),
    ("segment-full-disk-overwrite", f"{SEG} {{image}} -o {{old_result}} --overwrite", 2, "free"),
    ("segment-probabilities-full-disk", f"{SEG} {{image}} -o {{nearly_full}}/seg.nii.gz --probabilities", 2,
     "free"),
    ("n4-nearly-full-disk", "n4 {image} -o {nearly_full}/n4.nii.gz", 2, "free"),
    ("n4-nearly-full-disk-nrrd", "n4 {image} -o {nearly_full}/n4.nrrd", 2, "free"),
    ("phantom-nearly-full-disk", "phantom -o {nearly_full} --size 64 64 8", 2, "free"),
    # an output that is an input (B8)
    ("n4-own-input", "n4 {image} -o {image} --overwrite", 2, "would replace an input"),
    ("n4-bias-field-is-input", "n4 {image} -o {out}/n4.nii.gz --bias-field {image} --overwrite", 2,
     "would replace an input"),
    ("segment-own-input", f"{SEG} {{image}} -o {{image}} --overwrite", 2, "would replace an input"),
    ("segment-own-input-respelled", f"{SEG} {{image}} -o {{out}}/../image.nii.gz --overwrite", 2,
     "would replace an input"),
    ("segment-output-folder-is-input-folder", f"{SEG} {{image_pair}} -o {{image_pair}}/. --overwrite", 2,
     "would replace an input"),
    ("evaluate-report-is-prediction-folder", "evaluate {pred_folder} {gt_folder} -o {pred_folder} --overwrite", 2,
     "would replace an input"),
    ("evaluate-report-is-gt-folder-respelled", "evaluate {pred_folder} {gt_folder} -o {pred_folder}/../gt/ --overwrite",
     2, "would replace an input"),
    ("evaluate-report-is-link-to-predictions", "evaluate {pred_folder} {gt_folder} -o {pred_link} --overwrite", 2,
     "would replace an input"),
    ("export-onnx-is-link-to-weights", "export {model} --onnx {weights_link} --overwrite", 2, "would replace an input"),
    ("ablation-output-is-cv-run", "ablation {cv_run} -o {cv_run} --overwrite", 2, "would replace an input"),
    ("ablation-output-is-report-it-reads", "ablation {cv_run}/hybrid -o {cv_run}/hybrid/report --overwrite", 2,
     "would replace an input"),
    ("train-run-folder-is-data", "train {data} -o {data} --no-n4 --resume", 2, "would replace an input"),
    ("train-cache-is-data", f"train {{data}} -o {{out}} --cache {{data}}/. {TINY}", 2, "would replace an input"),
    ("cv-run-folder-is-data", f"cv {{data}} -o {{data}}/. --folds 2 --resume --models resunet {TINY}", 2,
     "would replace an input"),
    # an empty argument (an unset shell variable) is not the current folder
    ("segment-output-empty", f"{SEG} {{image}} -o {{empty}}", 2, "argument -o: empty value"),
    ("segment-model-empty", f"segment {{image}} -o {{out}}/seg.nii.gz --model {{empty}} --json", 2,
     "argument --model: empty value"),
    ("phantom-output-empty", "phantom -o {empty} --size 32 32 4", 2, "argument -o: empty value"),
    ("info-empty-input", "info {empty}", 2, "an argument: empty value"),
    # usage errors speak JSON under --json; no C++ text in a one-line error (B13)
    ("usage-json", "segment --json", 2, "required"),
    ("info-dicom-junk", "info {dicom_junk}", 2, "no DICOM series"),
    # model headers: bounded before anything is built, files confined, errors name model.json (B9, B6, B13)
    ("segment-model-width-1e6", f"{SEG} {{image}} -o {{out}}/seg.nii.gz --model {{model_wide}}", 2,
     "width = 1000000"),
    ("segment-model-window-1e5", f"{SEG} {{image}} -o {{out}}/seg.nii.gz --model {{model_huge_window}}", 2,
     "window [12, 100000, 100000]"),
    ("segment-model-unknown-arch", f"{SEG} {{image}} -o {{out}}/seg.nii.gz --model {{model_unknown_arch}}", 2,
     "arch/model.json: unknown architecture"),
    ("segment-onnx-absolute-path", "segment {image} -o {out}/seg.nii.gz --backend onnx --model {model_onnx_absolute}",
     2, "onnx.file"),
    ("segment-onnx-parent-path", "segment {image} -o {out}/seg.nii.gz --backend onnx --model {model_onnx_parent}",
     2, "not a file name inside the model folder"),
    ("segment-onnx-without-sha256", "segment {image} -o {out}/seg.nii.gz --backend onnx --model {model_onnx_no_sha}",
     2, "onnx.sha256"),
    # sizes and versions beyond what can be built (B9)
    ("segment-window-1e5", f"{SEG} {{image}} -o {{out}}/seg.nii.gz --window 100000 100000 100000", 2,
     "larger than 256 x 2048 x 2048"),
    ("train-width-0", f"train {{data}} -o {{out}} {TINY} --hparam width=0", 2, "width = 0 is below 1"),
    ("train-width-1e9", f"train {{data}} -o {{out}} {TINY} --hparam width=1e9", 2, "--hparam: hyper-parameter width"),
    ("segment-model-width-0", f"{SEG} {{image}} -o {{out}}/seg.nii.gz --model {{model_width_0}}", 2,
     "width0/model.json: hyper-parameter width = 0 is below 1"),
    ("train-norm-unknown", f"train {{data}} -o {{out}} {TINY} --hparam norm=foo", 2, "unknown norm 'foo'"),
    ("train-nnunet-one-level", "train {data} -o {out} --no-n4 --epochs 1 --model nnunet-like --hparam filters=[8]",
     2, "at least 2 filter levels"),
    ("train-seed-negative", f"train {{data}} -o {{out}} {TINY} --seed -1", 2, "--seed -1"),
    ("train-cache-is-a-file", f"train {{data}} -o {{out}} {TINY} --cache {{image}}", 2, "--cache is not a folder"),
    ("train-window-1e5", f"train {{data}} -o {{out}} {TINY} --window 12 100000 100000", 2,
     "larger than 256 x 2048 x 2048"),
    ("export-opset-1", "export {model} --onnx {out}/m.onnx --opset 1", 2, "export writes opset 17 to 20"),
    ("export-opset-99", "export {model} --onnx {out}/m.onnx --opset 99", 2, "export writes opset 17 to 20"),
    # training and run folders (B9, B12)
    ("ablation-given-train-run", "ablation {train_run} -o {out}", 2, "not a 'spineseg cv' folder"),
    ("train-resume-corrupt-config", "train {data} -o {corrupt_config_run} --resume --no-n4", 2, "config.json: damaged"),
    ("train-resume-bad-checkpoint", f"train {{data}} -o {{bad_checkpoint_run}} {RESUME} --resume", 2,
     "cannot read checkpoint"),
    ("cv-too-few-cases", "cv {data} -o {out} --folds 5 --no-n4", 2, "2 cases are fewer than 5 folds"),
    # training settings that would give a NaN model, a null in config.json, or exhaust memory
    ("train-lr-inf", f"train {{data}} -o {{out}} {TINY} --lr inf", 2, "learning rate inf"),
    ("train-time-budget-inf", f"train {{data}} -o {{out}} {TINY} --time-budget inf", 2, "--time-budget inf"),
    ("train-inplane-mm-1e-9", f"train {{data}} -o {{out}} {TINY} --inplane-mm 1e-9", 2, "--inplane-mm 1e-09"),
    ("train-inplane-mm-far-finer-than-data", f"train {{data}} -o {{out}} {TINY} --inplane-mm 0.01", 2,
     "more than 4x finer"),
    # cv --resume: only a cv folder, with the settings it was started with (its finished folds are pooled)
    ("cv-resume-other-settings", f"cv {{data}} -o {{cv_run}} --folds 2 --resume --models resunet {TINY}", 2,
     "--resume with different settings ("),
    ("cv-resume-nothing-to-resume", f"cv {{data}} -o {{out}} --folds 2 --resume --models resunet {TINY}", 2,
     "nothing to resume"),
    ("cv-resume-train-run", f"cv {{data}} -o {{train_run}} --folds 2 --resume --models resunet {TINY}", 2,
     "not a 'spineseg cv' run folder"),
    ("cv-resume-corrupt-config", f"cv {{data}} -o {{corrupt_config_run}} --folds 2 --resume --models resunet {TINY}",
     2, "config.json: damaged"),
    # a run folder another training holds (B5): refused at once, its files untouched
    ("train-run-folder-in-use", "train {data} -o {locked_run} --no-n4", 2,
     "another training is using this run folder (pid"),
    ("train-resume-run-folder-in-use", "train {data} -o {locked_run} --no-n4 --resume", 2,
     "another training is using this run folder (pid"),
    ("cv-run-folder-in-use", "cv {data} -o {locked_run} --folds 2 --no-n4", 2,
     "another training is using this run folder (pid"),
    # several inputs: all checked before the first case, so earlier results survive (B3)
    ("segment-folder-one-bad-input-overwrite", f"{SEG} {{image_folder}} -o {{earlier_results}} --overwrite", 2,
     "c.nii: truncated NIfTI"),
    ("phantom-size-1e5-cubed", "phantom -o {out} --size 100000 100000 100000", 2, "voxels is more than"),
]


def _snapshot(folder: Path) -> Dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def fault(monkeypatch):
    """Mount state for {full}/{nearly_full}; the fallback shortens every image ITK writes."""
    _FAULT.clear()
    _FAULT["mounts"] = []
    real = sitk.WriteImage

    def short_write(img, path, *args, **kwargs):
        real(img, path, *args, **kwargs)
        free = _FAULT.get("short_writes")
        if free is not None:  # what ITK's NIfTI writer leaves on a full disk, exit status fine
            os.truncate(path, min(int(free), os.path.getsize(path) // 2))

    monkeypatch.setattr("spineseg.io.sitk.WriteImage", short_write)
    yield _FAULT
    for proc in _FAULT.get("procs") or []:
        proc.kill()
        proc.wait(timeout=30)
    for folder in reversed(_FAULT.get("mounts") or []):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)
    _FAULT.clear()


@pytest.mark.parametrize("case_id,command,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, command, code, fragment, tmp_path, capfd, fault, random_model, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)  # what a command writes into the current folder is seen too
    model = work / "model"
    shutil.copytree(random_model, model)
    values: Dict[str, object] = {"out": work / "out", "model": model}
    for name, build in INPUTS.items():
        if "{" + name + "}" in command:
            values[name] = build(work)
    argv: List[str] = [a.format(**values) for a in command.split()]
    before = _snapshot(work)
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    captured = capfd.readouterr()
    assert rc == code, captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.strip() and not ln.startswith("spineseg: warning:")]
    usage = [ln for ln in lines if ln.startswith("usage:") or ln.startswith("  ")]
    errors = [ln for ln in lines if ln not in usage]
    assert len(errors) == 1 and errors[0].startswith("spineseg") and "error" in errors[0], captured.err
    assert fragment in errors[0], captured.err
    if "--json" in argv:
        event = json.loads(captured.out.strip().splitlines()[-1])
        assert event["event"] == "error" and event["exit_code"] == code and fragment in event["message"]
    assert _snapshot(work) == before, "files written, changed or left behind"


def test_case_count():
    """The report quotes this count; ids must be unique."""
    assert len({c[0] for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- defects that are not refusals

def _strict_json(line: str):
    return json.loads(line, parse_constant=lambda token: pytest.fail(f"not JSON: bare {token} in {line}"))


def test_evaluate_json_undefined_metric_is_null(tmp_path, capsys):
    """An empty prediction has no PPV: the --json stream says null, as metrics.json does, never bare NaN."""
    gt = np.zeros((5, 40, 48), np.uint8)
    gt[2, 10:20, 10:20] = 1
    sitk.WriteImage(sitk.GetImageFromArray(gt), str(tmp_path / "gt.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(gt)), str(tmp_path / "pred.nii.gz"))
    rc = main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "-o", str(tmp_path / "r"),
               "--json"])
    assert rc == 0
    done = [_strict_json(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert done["event"] == "done" and done["structures"]["vertebra"]["ppv"] is None


def test_all_background_labels_warn(tmp_path):
    """Training on label maps without foreground is allowed (a user may mean it) but never silent."""
    from spineseg.training.data import find_cases, validate_cases

    with pytest.warns(UserWarning, match="every label map is all background"):
        validate_cases(find_cases(background_data(tmp_path)), [1, 2, 3])


def test_late_failure_restores_replaced_results(tmp_path, random_model, monkeypatch, capsys):
    """A failure after some outputs replaced earlier results puts those results back (never deletes them)."""
    import spineseg.io

    inputs, results = image_folder(tmp_path), earlier_results(tmp_path)
    (inputs / "c.nii").unlink()
    before = _snapshot(results)
    real, calls = spineseg.io.write_image, []

    def fail_second(image, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise spineseg.errors.InputError(f"{path}: cannot write image (injected); check free space")
        return real(image, path, **kwargs)

    monkeypatch.setattr(spineseg.io, "write_image", fail_second)
    rc = main(["segment", str(inputs), "-o", str(results), "--model", str(random_model), "--device", "cpu",
               "--overwrite"])
    assert rc == 2 and "injected" in capsys.readouterr().err and len(calls) == 2
    assert _snapshot(results) == before  # a_seg was replaced, then put back; no backup left


@pytest.mark.parametrize("command,presses", [("n4", 1), ("segment", 2)])
def test_ctrl_c_during_n4_exits_130(tmp_path, random_model, command, presses):
    """SimpleITK turns Ctrl-C inside N4's progress callback into a RuntimeError: it must still be a cancel
    (exit 130, no traceback, nothing written). In segment the first Ctrl-C asks to stop at the next
    batch and the second stops at once."""
    import signal
    import time

    big = tmp_path / "big.nii.gz"
    sitk.WriteImage(_mr(size=(160, 160, 24)), str(big))
    out = tmp_path / "out"
    argv = {"n4": ["n4", str(big), "-o", str(out / "n4.nii.gz"), "--shrink", "1", "--iterations", "400,400,400",
                   "--convergence", "0"],
            "segment": ["segment", str(big), "-o", str(out / "seg.nii.gz"), "--model", str(random_model),
                        "--device", "cpu", "--n4", "--n4-shrink", "1"]}[command]
    proc = subprocess.Popen([sys.executable, "-m", "spineseg", *argv, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # type: ignore[union-attr]
        if "N4 level" in line:  # inside N4's fit
            break
    time.sleep(0.3)
    for _ in range(presses):  # back to back, both inside N4: a press after the run has ended is not this test
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "RuntimeError" not in stderr, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["exit_code"] == 130
    assert not out.exists()


def test_ctrl_c_inside_n4_is_a_keyboard_interrupt():
    """The same N4 fit runs in train/cv preprocessing: Ctrl-C there must stay a KeyboardInterrupt (exit 130)."""
    import signal
    import threading

    from spineseg.preprocessing import n4_correct

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            n4_correct(_mr(size=(160, 160, 24)), shrink=1, iterations=[400, 400, 400], convergence=0.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
