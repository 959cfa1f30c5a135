"""Baselines from MONAI, wrapped to the family's contract (any D, any H, W; D never downsampled).

``unetpp``: MONAI's BasicUNetPlusPlus run 2D on every slice (slices folded into
the batch), BatchNorm by default so it too is window-independent in eval mode.
``nnunet-like``: MONAI's DynUNet in an nnU-Net-like anisotropic setup
(1x3x3 kernels in the first two stages, 3x3x3 after, in-plane strides only,
instance norm as nnU-Net uses it).
"""
from __future__ import annotations

from typing import Sequence

import torch

from spineseg.errors import InputError
from spineseg.networks.blocks import fold_slices, unfold_slices
from spineseg.networks.hybrid import PadCropModule


def _monai_norm(norm: str):
    if norm == "batch":
        return ("batch", {"affine": True})
    if norm == "instance":
        return ("instance", {"affine": True})
    raise InputError(f"unknown norm {norm!r}; use 'batch' or 'instance'")


class _Unused(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class UNetPlusPlus2D(PadCropModule):
    multiple = 16

    def __init__(self, in_channels: int, out_channels: int, *, features: Sequence[int] = (32, 32, 64, 128, 256, 32),
                 norm: str = "batch"):
        super().__init__()
        from monai.networks.nets import BasicUNetPlusPlus

        self.in_channels, self.out_channels = in_channels, out_channels
        self.net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                                     features=tuple(int(f) for f in features), norm=_monai_norm(norm),
                                     deep_supervision=False)
        # MONAI computes the three deep-supervision heads even when it discards them: replace
        # them by a no-op so every parameter gets a gradient (DDP refuses unused parameters)
        for k in ("final_conv_0_1", "final_conv_0_2", "final_conv_0_3"):
            setattr(self.net, k, _Unused())

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(fold_slices(x))[0]
        return unfold_slices(y, x.shape[0])


class NNUNetLike(PadCropModule):
    multiple = 32

    def __init__(self, in_channels: int, out_channels: int, *, filters: Sequence[int] = (32, 64, 128, 256, 320, 320),
                 norm: str = "instance"):
        super().__init__()
        from monai.networks.nets import DynUNet

        filters = [int(f) for f in filters]
        n = len(filters)
        if n < 2:
            raise InputError("nnunet-like needs at least 2 filter levels")
        self.multiple = 2 ** (n - 1)
        kernels = [(1, 3, 3) if i < 2 else (3, 3, 3) for i in range(n)]
        strides = [(1, 1, 1)] + [(1, 2, 2)] * (n - 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.net = DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, kernel_size=kernels,
                           strides=strides, upsample_kernel_size=strides[1:], filters=filters,
                           norm_name=_monai_norm(norm), deep_supervision=False, res_block=False)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
