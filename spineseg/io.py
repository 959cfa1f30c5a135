"""Image I/O through SimpleITK, with the checks a user needs and atomic writes.

Reads NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and
DICOM series folders. Writes NIfTI, NRRD and MHA through a temporary file in the
target folder and a rename, so an interrupted or failed write never leaves a
half-written file and never destroys an existing one.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk

from spineseg.errors import InputError
from spineseg.nifti import check_nifti, is_nifti

PathLike = Union[str, "os.PathLike[str]"]

READ_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def image_extension(path: PathLike) -> str:
    """The image extension of ``path`` (``.nii.gz`` counts as one), lower case, or ''."""
    name = Path(path).name.lower()
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return ""


def is_image_file(path: PathLike) -> bool:
    return Path(path).is_file() and image_extension(path) != ""


def strip_image_extension(path: PathLike) -> str:
    """File name without its image extension: ``case_01.nii.gz`` -> ``case_01``."""
    name = Path(path).name
    ext = image_extension(name)
    return name[: -len(ext)] if ext else Path(name).stem


def dicom_series(folder: PathLike) -> List[str]:
    """File names of the single DICOM series in ``folder``; errors for none or several."""
    folder = str(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not ids:
        raise InputError(f"{folder}: no DICOM series found in this folder; give an image file or a DICOM series folder")
    if len(ids) > 1:
        raise InputError(
            f"{folder}: folder holds {len(ids)} DICOM series ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); "
            "put each series in its own folder and pass one"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))


def read_image(path: PathLike, *, kind: str = "image") -> sitk.Image:
    """Read a 3D scalar image from a file or DICOM series folder and check it.

    ``kind`` is ``"image"`` (intensities must be finite and not constant) or
    ``"label"`` (integer-valued; may be empty). Every problem raises
    :class:`InputError` with a one-line message naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found; check the path")
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(dicom_series(p))
            image = reader.Execute()
        else:
            if image_extension(p) == "" and not p.name.lower().endswith(".dcm"):
                raise InputError(
                    f"{p}: unsupported file type; use NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd) or a DICOM folder"
                )
            if not p.is_file():
                raise InputError(f"{p}: not a regular file (a device, pipe or socket); give an image file")
            if is_nifti(p):
                check_nifti(p, finite=True)  # before ITK: it zero-fills short payloads and NaN, and allocates blindly
            elif p.name.lower().endswith(".gz"):
                _check_gzip_complete(p)
            image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        reason = next((line.strip() for line in reversed(detail) if line.strip()), "unknown reason")
        raise InputError(f"{p}: cannot read image (corrupt, truncated or not an image: {reason[:160]})") from None
    check_image(image, p, kind=kind)
    return image


def _check_gzip_complete(path: Path) -> None:
    """ITK reads a truncated .gz silently, zero-filling what is missing: check the stream ourselves."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{path}: file is truncated or corrupt ({exc}); copy or export it again") from None


def check_image(image: sitk.Image, name: PathLike = "image", *, kind: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` is a usable 3D scalar image."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector); "
            "give a single-channel MR volume"
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim != 3:
        what = "2D" if dim == 2 else f"{dim}D"
        raise InputError(f"{name}: image is {what} with size {size}; give a 3D volume (one time point, one channel)")
    if min(size) < 1:
        raise InputError(f"{name}: image is empty (size {size})")
    check_geometry(image, name)
    array = sitk.GetArrayViewFromImage(image)
    if kind == "image":
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise InputError(f"{name}: image has {bad} NaN or infinite voxels; fix or mask them before segmenting")
        if array.dtype.itemsize > 4 and array.size and max(abs(float(array.min())), abs(float(array.max()))) > _FLOAT32_MAX:
            raise InputError(f"{name}: intensities reach {max(abs(float(array.min())), abs(float(array.max()))):.3g}, "
                             "beyond the float32 range SpineSeg computes in; rescale the image")
        if array.size and array.min() == array.max():
            raise InputError(f"{name}: image is constant (every voxel is {array.flat[0]}); it holds no anatomy to segment")
    elif kind == "label":
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all() or not np.all(np.mod(array, 1) == 0):
                raise InputError(f"{name}: label map has non-integer values; give an integer label map")
    else:
        raise ValueError(f"unknown kind {kind!r}")


#: largest finite float32: SpineSeg computes in float32, so larger intensities would become infinite
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: spacings SpineSeg accepts, in mm (a sub-micron or metre-scale voxel is a broken header, not an MR volume)
SPACING_RANGE_MM = (1e-3, 1e3)
#: largest deviation of the direction cosines from an orthonormal matrix (1-ulp noise is far below it)
DIRECTION_TOLERANCE = 1e-4


def check_geometry(image: sitk.Image, name: PathLike = "image") -> None:
    """Refuse spacings outside :data:`SPACING_RANGE_MM` and direction cosines that are not orthonormal.

    A sheared (non-orthogonal) grid cannot be written to NIfTI (ITK would silently write
    another direction), and every output must have its input's geometry exactly.
    """
    spacing = image.GetSpacing()
    lo, hi = SPACING_RANGE_MM
    if not all(lo <= s <= hi for s in spacing):
        raise InputError(f"{name}: spacing {' x '.join(f'{s:g}' for s in spacing)} mm is outside "
                         f"{lo:g}..{hi:g} mm; the header is damaged: fix the spacing")
    n = image.GetDimension()
    d = np.asarray(image.GetDirection(), dtype=float).reshape(n, n)
    err = float(np.abs(d.T @ d - np.eye(n)).max())
    if not err <= DIRECTION_TOLERANCE:
        raise InputError(f"{name}: direction cosines are not orthonormal (off by {err:.2g}: a sheared grid); "
                         "resample the image onto an orthogonal grid first")


def _check_output_path(path: Path, overwrite: bool, image: bool = True) -> None:
    if image and image_extension(path) not in WRITE_EXTENSIONS:
        raise InputError(f"{path}: cannot write this file type; use .nii.gz, .nii, .nrrd or .mha")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name such as {path / 'label.nii.gz'}")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: output exists; pass --overwrite to replace it or choose another name")
    name_max = _name_max(path.parent)
    if len(os.fsencode(path.name)) > name_max:
        raise InputError(f"{path.name[:40]}...: file name too long ({len(os.fsencode(path.name))} bytes, the "
                         f"filesystem allows {name_max}); choose a shorter output name")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # checked, not created: a refused run leaves no empty folder behind
    if not existing.is_dir():
        raise InputError(f"{folder}: cannot create output folder ({existing} is a file); "
                         "choose another output location")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{existing}: output folder is not writable; choose another output location")


def _name_max(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(str(probe), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf
        return 255


def make_parents(path: Path) -> List[Path]:
    """Create the missing folders above ``path``; returns them, outermost first (for :func:`remove_empty`)."""
    missing = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty(missing)
        raise InputError(f"{path.parent}: cannot create output folder ({exc.strerror}); "
                         "choose a writable location") from None
    return missing


def remove_empty(folders: List[Path]) -> None:
    """Remove the folders of :func:`make_parents` again, innermost first, where they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass


def refuse_input_as_output(outputs: List[Optional[PathLike]], inputs: List[Optional[PathLike]]) -> None:
    """Raise :class:`InputError` when an output names an input (links resolved): with ``--overwrite``
    the input would be replaced by its own result."""
    sources = [Path(i).resolve() for i in inputs if i is not None]
    for out in outputs:
        if out is not None and Path(out).resolve() in sources:
            raise InputError(f"{out}: output would replace an input; choose another output name")


def check_writable(path: PathLike, *, overwrite: bool = False, image: bool = True) -> Path:
    """Check, before any work is done, that ``path`` can be written; returns it as a Path.

    ``image=False``: any file type (a PNG, a report), not only the image formats SpineSeg writes.
    """
    p = Path(path)
    _check_output_path(p, overwrite, image)
    return p


def write_image(image: sitk.Image, path: PathLike, *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``image`` atomically: a temporary file beside the target, then a rename.

    Refuses to replace an existing file unless ``overwrite``. On any failure
    (disk full, permissions) the temporary file is removed and the target is
    untouched.
    """
    p = Path(path)
    _check_output_path(p, overwrite)
    ext = image_extension(p)
    created = make_parents(p)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{strip_image_extension(p)}.", suffix=f".tmp{ext}", dir=str(p.parent))
    except OSError as exc:
        remove_empty(created)
        raise InputError(f"{p}: cannot write image ({exc.strerror}; {free_space(p.parent)}); "
                         "check free space and permissions") from None
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, compress)
        with open(tmp, "rb") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        _verify_written(Path(tmp), image, p)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        remove_empty(created)
        if isinstance(exc, InputError):
            raise
        if not isinstance(exc, (RuntimeError, OSError)):
            raise
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p}: cannot write image ({reason[:160]}); {free_space(p.parent)}, "
                         "check free space and permissions") from None
    return p


def free_space(folder: Path) -> str:
    """How much space is left where ``folder`` lives, for messages ('1.2 MiB free')."""
    try:
        free = shutil.disk_usage(str(folder)).free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1024
    return ""  # unreachable


def _verify_written(tmp: Path, image: sitk.Image, target: Path) -> None:
    """ITK's writers (NIfTI's above all) report no write errors: a full disk leaves a short file
    and exit 0. Read the file back before it replaces anything."""
    expected = int(np.prod(image.GetSize())) * image.GetNumberOfComponentsPerPixel()
    try:
        if is_nifti(tmp):
            header = check_nifti(tmp)
            ok = int(np.prod(header.size)) == expected
        else:
            back = sitk.ReadImage(str(tmp))
            ok = back.GetSize() == image.GetSize() and np.array_equal(
                sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image), equal_nan=True)
    except (InputError, RuntimeError, OSError):
        ok = False
    if not ok:
        raise InputError(f"{target}: the written file came out incomplete ({tmp.stat().st_size} bytes; "
                         f"{free_space(target.parent)} in {target.parent}); free some space or choose another "
                         "location (nothing was replaced)")


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` fit for strict JSON: NaN/inf floats as None (readers take null as undefined),
    numpy scalars and arrays as Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(value: Any) -> Any:
    """What json_safe leaves that JSON cannot hold: tensors and other scalars by value, anything else as text."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def json_text(obj: Any, *, indent: Optional[int] = 2, compact: bool = False) -> str:
    """Strict JSON text of ``obj`` (:func:`json_safe`: NaN is null); ``compact``: no spaces, for one-line events."""
    return json.dumps(json_safe(obj), indent=indent, separators=(",", ":") if compact else None,
                      default=_json_default, allow_nan=False)


def write_json(obj: Any, path: PathLike, *, overwrite: bool = False) -> Path:
    """``obj`` as strict JSON (indented, one trailing newline), written atomically."""
    return write_bytes_atomic((json_text(obj) + "\n").encode("utf-8"), path, overwrite=overwrite)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    return 0o666 & ~current_umask()


def write_bytes_atomic(data: bytes, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write any file atomically (reports, JSON, model files), same rules as :func:`write_image`."""
    p = Path(path)
    write_files_atomic({p: data}, overwrite=overwrite)
    return p


def write_files_atomic(files: Dict[Path, bytes], *, overwrite: bool = False) -> None:
    """Write files that belong together (a model's weights and the header holding their sha256):
    every one goes to a temporary file first, and only when all are written and synced are they
    renamed into place, in order. A full disk leaves none of them changed."""
    paths = [Path(p) for p in files]
    for p in paths:
        if p.exists() and not overwrite:
            raise InputError(f"{p}: output exists; pass --overwrite to replace it or choose another name")
    created: List[Path] = []
    temps: List[str] = []
    current = paths[0]
    try:
        for p, data in zip(paths, files.values()):
            current = p
            created += make_parents(p)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; give the usual umask-based mode
        for tmp, p in zip(temps, paths):
            current = p
            os.replace(tmp, p)
    except BaseException as exc:  # a refusal, a full disk or Ctrl-C: no temporary file stays
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        remove_empty(created)
        if not isinstance(exc, OSError):
            raise
        raise InputError(f"{current}: cannot write file ({exc.strerror or exc}; {free_space(current.parent)}); "
                         "check free space and permissions") from None


class Replacements:
    """The outputs of a multi-file command, so that a failure can undo them all.

    :meth:`add` is called before an output is written: a file already there is kept aside
    (a hard link, else a copy) until :meth:`commit`, so :meth:`rollback` restores the user's
    earlier results instead of deleting them, and removes only what this run newly created.
    """

    def __init__(self) -> None:
        self._entries: List[tuple] = []

    def add(self, path: PathLike) -> None:
        target = Path(path)
        backup = None
        if target.is_file():
            backup = target.with_name(f".{target.name}.previous")
            if backup.exists():
                backup.unlink()  # left by a run that was killed
            try:
                os.link(target, backup)
            except OSError:
                shutil.copy2(target, backup)
        self._entries.append((target, backup))

    def rollback(self) -> None:
        for target, backup in reversed(self._entries):
            try:
                if backup is not None and target.exists() and os.path.samefile(backup, target):
                    backup.unlink()  # never replaced (a rename onto the same file would do nothing)
                elif backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink()
            except OSError:
                pass
        self._entries.clear()

    def commit(self) -> None:
        for _, backup in self._entries:
            if backup is not None:
                try:
                    backup.unlink()
                except OSError:
                    pass
        self._entries.clear()


def list_inputs(paths: List[PathLike]) -> List[Path]:
    """Expand command-line inputs: files, folders of image files, DICOM series folders."""
    out: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: file not found; check the path")
        if p.is_file():
            out.append(p)
            continue
        if not p.is_dir():
            raise InputError(f"{p}: not a regular file (a device, pipe or socket); give an image file")
        images = sorted(q for q in p.iterdir() if is_image_file(q))
        if images:
            out.extend(images)
        else:
            dicom_series(p)  # raises for an empty or mixed folder
            out.append(p)
    return out
