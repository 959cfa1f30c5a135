"""The network family behind a registry: name -> constructor and default hyper-parameters.

Importing this package does not import torch (the ONNX backend and ``read_header``
use the names and defaults without it); :func:`build_network` imports the
implementation on demand.

Every network takes (B, C, D, H, W) float input with any D >= 1 and any H, W
(it pads H, W to its multiple and crops back), returns raw logits
(B, out_channels, D, H, W), and never downsamples D.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any, Dict, Tuple

from spineseg.errors import InputError

_HYBRID_DEFAULTS: Dict[str, Any] = {
    "width": 16,
    "ux_kernel": 7,
    "mlp_ratio": 4,
    "hanc_expansion": 2,
    "hanc_levels": [2, 3, 4],
    "hanc_depths": [3, 5, 7],
    "norm": "batch",
    "layer_scale": 1e-6,
}

# name -> (module, class, default hparams, one-line description)
_REGISTRY: Dict[str, Tuple[str, str, Dict[str, Any], str]] = {
    "hybrid": ("spineseg.networks.hybrid", "HybridUNet", {**_HYBRID_DEFAULTS, "ux": True, "hanc": True},
               "2D UX blocks in the encoder, 3D ResBlocks, 3D HANC skips (the SpineSeg network)"),
    "no-ux": ("spineseg.networks.hybrid", "HybridUNet", {**_HYBRID_DEFAULTS, "ux": False, "hanc": True},
              "ablation: UX blocks replaced by ResBlocks"),
    "no-hanc": ("spineseg.networks.hybrid", "HybridUNet", {**_HYBRID_DEFAULTS, "ux": True, "hanc": False},
                "ablation: HANC skips replaced by ResBlocks"),
    "resunet": ("spineseg.networks.hybrid", "HybridUNet", {**_HYBRID_DEFAULTS, "ux": False, "hanc": False},
                "ablation: ResBlocks only"),
    "unetpp": ("spineseg.networks.baselines", "UNetPlusPlus2D",
               {"features": [32, 32, 64, 128, 256, 32], "norm": "batch"},
               "baseline: MONAI BasicUNetPlusPlus run 2D per slice"),
    "nnunet-like": ("spineseg.networks.baselines", "NNUNetLike",
                    {"filters": [32, 64, 128, 256, 320, 320], "norm": "instance"},
                    "baseline: MONAI DynUNet, nnU-Net-like anisotropic (1x3x3 then 3x3x3, in-plane strides)"),
}


#: the architectures ``spineseg cv`` compares by default (the ablation of the design report's Table 1)
ABLATION_SET: Tuple[str, ...] = ("hybrid", "no-ux", "no-hanc", "resunet", "unetpp")


def network_names() -> Tuple[str, ...]:
    """The registered architecture names, in table order."""
    return tuple(_REGISTRY)


def network_description(name: str) -> str:
    return _entry(name)[3]


def network_defaults(name: str) -> Dict[str, Any]:
    """Default hyper-parameters of ``name`` (a copy; JSON-serialisable)."""
    return copy.deepcopy(_entry(name)[2])


def _entry(name: str) -> Tuple[str, str, Dict[str, Any], str]:
    if name not in _REGISTRY:
        raise InputError(f"unknown network architecture {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def resolve_hparams(name: str, hparams: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults of ``name`` updated with ``hparams``; unknown keys are an InputError."""
    defaults = network_defaults(name)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise InputError(
            f"network {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; valid: {', '.join(defaults)}"
        )
    merged = {**defaults, **hparams}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}


def build_network(name: str, *, in_channels: int = 1, out_channels: int, **hparams: Any):
    """Build the registered network ``name`` (a ``torch.nn.Module``).

    ``out_channels`` is 1 for a binary model (sigmoid) or 1 + number of classes
    (softmax). The module gets a ``spec`` attribute with the resolved
    architecture (``name``, ``in_channels``, ``out_channels``, ``hparams``), which
    is what a model file header records.
    """
    module_name, class_name, _, _ = _entry(name)
    if int(in_channels) < 1 or int(out_channels) < 1:
        raise InputError(f"network {name!r}: in_channels and out_channels must be >= 1 (got {in_channels}, {out_channels})")
    resolved = resolve_hparams(name, hparams)
    cls = getattr(importlib.import_module(module_name), class_name)
    net = cls(int(in_channels), int(out_channels), **resolved)
    net.spec = {"name": name, "in_channels": int(in_channels), "out_channels": int(out_channels),
                "hparams": copy.deepcopy(resolved)}
    return net


__all__ = ["build_network", "network_names", "network_defaults", "network_description", "resolve_hparams"]
