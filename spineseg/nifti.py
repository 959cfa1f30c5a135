"""A NIfTI file's own header, read by SpineSeg before ITK sees the file.

ITK's NIfTI reader zero-fills a payload shorter than its header claims (a truncated
``.nii``, a ``.nii.gz`` whose gzip stream is complete but short), allocates whatever the
header claims before it reads a byte (a 344-byte file can claim 1000x1000x200 voxels),
and turns NaN and infinite voxels into 0. So the header (NIfTI-1: 348 bytes, NIfTI-2: 540)
is parsed here, the payload is streamed once in chunks (never held in memory) to measure
its length, and float payloads are checked for non-finite values on the way.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Tuple, Union

import numpy as np

from spineseg.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

#: NIfTI datatype codes of the float types whose voxels can be NaN or infinite
_FLOAT_TYPES = {16: "f4", 64: "f8"}
_CHUNK = 1 << 22


@dataclass(frozen=True)
class NiftiHeader:
    size: Tuple[int, ...]  # voxels per dimension (x, y, z, ...)
    datatype: int
    bitpix: int
    vox_offset: int
    endian: str  # '<' or '>'

    @property
    def payload_bytes(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n * self.bitpix // 8


def is_nifti(path: PathLike) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def parse_header(raw: bytes, path: PathLike = "image") -> NiftiHeader:
    """The geometry fields of a NIfTI-1 or NIfTI-2 header (``raw``: the file's first bytes)."""
    for endian in "<>":
        if len(raw) >= 4 and struct.unpack(endian + "i", raw[:4])[0] == 348:
            if len(raw) < 348:
                break
            dims = struct.unpack(endian + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
            vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            return _checked(dims, datatype, bitpix, vox_offset, endian, 352, path)
        if len(raw) >= 4 and struct.unpack(endian + "i", raw[:4])[0] == 540:
            if len(raw) < 540:
                break
            datatype, bitpix = struct.unpack(endian + "2h", raw[12:16])
            dims = struct.unpack(endian + "8q", raw[16:80])
            vox_offset = struct.unpack(endian + "q", raw[168:176])[0]
            return _checked(dims, datatype, bitpix, vox_offset, endian, 544, path)
    raise InputError(f"{path}: cannot read image (not a NIfTI file, or its header is truncated: {len(raw)} "
                     "bytes); copy or export it again")


def _checked(dims, datatype: int, bitpix: int, vox_offset: int, endian: str, minimum_offset: int,
             path: PathLike) -> NiftiHeader:
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix < 1 or bitpix % 8:
        raise InputError(f"{path}: damaged NIfTI header (dim {list(dims[:ndim + 1] if 0 < ndim < 8 else dims)}, "
                         f"bitpix {bitpix}); copy or export it again")
    return NiftiHeader(tuple(int(d) for d in dims[1:ndim + 1]), int(datatype), int(bitpix),
                       max(int(vox_offset), minimum_offset), endian)


def check_nifti(path: PathLike, *, finite: bool = False) -> NiftiHeader:
    """Raise :class:`InputError` unless the file holds every voxel its header claims.

    One streaming pass over the (decompressed) bytes: a truncated or corrupt gzip
    stream, a payload shorter than the header's size, and with ``finite`` NaN or
    infinite float voxels are each refused with one line naming the file.
    """
    p = Path(path)
    try:
        with _open(p) as fh:
            raw = fh.read(540)
            header = parse_header(raw, p)
            need = header.vox_offset + header.payload_bytes
            dtype = _FLOAT_TYPES.get(header.datatype) if finite else None
            got, bad = _stream(fh, raw, header, need, dtype)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{p}: file is truncated or corrupt ({exc}); copy or export it again") from None
    if got < need:
        raise InputError(f"{p}: truncated NIfTI: the header claims {'x'.join(map(str, header.size))} voxels "
                         f"({need} bytes) but the file holds {got} bytes; copy or export it again")
    if bad:
        raise InputError(f"{p}: image has {bad} NaN or infinite voxels; fix or mask them before using it")
    return header


def _stream(fh: BinaryIO, raw: bytes, header: NiftiHeader, need: int, dtype) -> Tuple[int, int]:
    """(bytes in the file, non-finite voxels in the payload), reading ``fh`` to its end in chunks."""
    item = header.bitpix // 8
    got, bad, pending = 0, 0, b""
    chunk = raw
    while chunk:
        if dtype:  # the part of this chunk inside the payload [vox_offset, need)
            lo, hi = max(header.vox_offset - got, 0), max(min(need - got, len(chunk)), 0)
            if lo < hi:
                pending += chunk[lo:hi]
                whole = len(pending) // item * item
                bad += _count_bad(pending[:whole], header.endian + dtype)
                pending = pending[whole:]
        got += len(chunk)
        chunk = fh.read(_CHUNK)
    return got, bad


def _count_bad(data: bytes, dtype: str) -> int:
    if not data:
        return 0
    values = np.frombuffer(data, dtype=np.dtype(dtype))
    return int(values.size - np.count_nonzero(np.isfinite(values)))
