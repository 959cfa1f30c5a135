"""The hybrid 2D/3D UNet (``hybrid``) and its ablation variants (``no-ux``, ``no-hanc``, ``resunet``).

Levels (in-plane size, channels at width w): full res (w), /2 (w), /4 (2w),
/8 (4w), /16 (8w), bottleneck /32 (16w). The slice axis D is never
downsampled. A full-resolution in-plane conv feeds the last skip so thin
structures (canal, disc borders) keep full in-plane detail.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spineseg.networks.blocks import (
    HANC3D,
    InPlaneConv,
    ResBlock,
    ResBlockDown,
    ResBlockUp,
    UXBlock2D,
    make_norm,
)


class PadCropModule(nn.Module):
    """Pads H, W (at the far end, with zeros) to ``self.multiple`` and crops the output back.

    Padding at the far end keeps the stride grid anchored at the first voxel,
    so a window cut from a tile at a multiple of ``multiple`` sees the same grid.
    """

    multiple = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        y = self.forward_padded(x)
        if ph or pw:
            y = y[..., :h, :w]
        return y

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class HybridUNet(PadCropModule):
    """Encoder: stem, 4 x (UX block or ResBlock, ResBlockDown); HANC (or ResBlock) skips; ResBlockUp decoder."""

    multiple = 32

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 16, ux: bool = True, hanc: bool = True,
                 ux_kernel: int = 7, mlp_ratio: int = 4, hanc_expansion: int = 2,
                 hanc_levels: Sequence[int] = (2, 3, 4), hanc_depths: Sequence[int] = (3, 5, 7),
                 norm: str = "batch", layer_scale: float = 1e-6):
        super().__init__()
        w = int(width)
        if w < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        levels = [int(v) for v in hanc_levels]
        if any(v < 0 or v > 4 for v in levels):
            raise ValueError(f"hanc_levels must be in 0..4 (skip levels), got {levels}")
        ch = [w, w, 2 * w, 4 * w, 8 * w, 16 * w]  # level 0 (full res) .. 5 (bottleneck, /32)
        self.channels = ch
        self.in_channels, self.out_channels = in_channels, out_channels

        self.full = nn.Sequential(InPlaneConv(in_channels, ch[0], 3, padding=1, bias=False), make_norm(norm, ch[0]),
                                  nn.GELU())
        self.stem = nn.Sequential(InPlaneConv(in_channels, ch[1], 3, stride=2, padding=1, bias=False),
                                  make_norm(norm, ch[1]))
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for lv in range(1, 5):
            self.enc.append(UXBlock2D(ch[lv], kernel=ux_kernel, mlp_ratio=mlp_ratio, norm=norm, layer_scale=layer_scale)
                            if ux else ResBlock(ch[lv], norm=norm))
            self.down.append(ResBlockDown(ch[lv], ch[lv + 1], norm=norm))
        self.skips = nn.ModuleList()
        for lv in range(5):
            if lv in levels:
                self.skips.append(HANC3D(ch[lv], expansion=hanc_expansion, depths=hanc_depths, norm=norm)
                                  if hanc else ResBlock(ch[lv], norm=norm))
            else:
                self.skips.append(nn.Identity())
        self.up = nn.ModuleList([ResBlockUp(ch[lv + 1], ch[lv], ch[lv], norm=norm) for lv in range(5)])
        self.head = nn.Conv3d(ch[0], out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.full(x)]
        s = self.stem(x)
        for enc, down in zip(self.enc, self.down):
            s = enc(s)
            feats.append(s)
            s = down(s)
        for lv in range(4, -1, -1):
            s = self.up[lv](s, self.skips[lv](feats[lv]))
        return self.head(s)
