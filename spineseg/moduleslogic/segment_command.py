"""The ``spineseg segment ... --json`` command line that SpineSeg UNet runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from spineseg.inference.backends import BACKENDS, DEVICES, is_device_name


@dataclass
class SegmentOptions:
    """The ``spineseg segment`` options the Slicer panel exposes (None: the CLI's default)."""

    model: Optional[str] = None  # model folder; None: the bundled default model
    device: str = "auto"  # one of DEVICES or cuda:N
    backend: str = "onnx"  # one of BACKENDS
    n4: Optional[bool] = None  # None: what the model header says
    n4_shrink: Optional[int] = None
    levels: bool = False  # also the per-level read-out (--levels)
    tta: bool = False  # flip test-time augmentation (--tta): averaged predictions and the review's uncertainty
    overwrite: bool = False
    extra_args: List[str] = field(default_factory=list)  # further CLI options, passed as given

    def validate(self) -> None:
        if not is_device_name(self.device):
            raise ValueError(f"device {self.device!r}: use {', '.join(DEVICES)} or cuda:N")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: use {' or '.join(BACKENDS)}")
        if self.n4_shrink is not None and int(self.n4_shrink) < 1:
            raise ValueError(f"N4 shrink factor {self.n4_shrink}: use an integer >= 1")


def segment_command(python: str, inputs: Sequence[str], output: str, options: SegmentOptions) -> List[str]:
    """The argv for ``<python> -m spineseg segment INPUT... -o OUTPUT [options] --json``."""
    options.validate()
    if not inputs:
        raise ValueError("no input image to segment")
    argv = [python, "-m", "spineseg", "segment", *[str(p) for p in inputs], "-o", str(output)]
    if options.model:
        argv += ["--model", str(options.model)]
    argv += ["--device", options.device, "--backend", options.backend]
    if options.n4 is not None:
        argv.append("--n4" if options.n4 else "--no-n4")
    if options.n4_shrink is not None:
        argv += ["--n4-shrink", str(int(options.n4_shrink))]
    if options.levels:
        argv.append("--levels")
    if options.tta:
        argv.append("--tta")
    if options.overwrite:
        argv.append("--overwrite")
    argv += list(options.extra_args)
    argv.append("--json")
    return argv
