"""Building blocks of the hybrid 2D/3D UNet family.

Layout is PyTorch's (B, C, D, H, W) with D the slice axis; nothing here
changes D. Norms never compute statistics over space in eval mode (BatchNorm,
or a LayerNorm over channels only), so a network gives the same per-voxel
output on a 128x128 window and on a larger tile.

In-plane (1 x k x k) operations hold 2D weights and run two ways with the same
result: as a 3D op on an ordinary (NCDHW) tensor, or, when the tensor is in
``channels_last_3d`` layout, as a 2D op on the slices folded into the batch.
That fold is a free view in channels-last layout (N,D,H,W,C -> N*D,H,W,C) and
lets cuDNN use its well-tuned 2D NHWC kernels (depthwise 7x7 in particular)
instead of the slow generic depthwise-3D path.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spineseg.errors import InputError


def is_channels_last_3d(x: torch.Tensor) -> bool:
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def fold_slices(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B*D, C, H, W); a view for channels-last tensors."""
    b, c, d, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)


def unfold_slices(y: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*D, C, H, W) -> (B, C, D, H, W); the inverse of :func:`fold_slices`."""
    bd, c, h, w = y.shape
    return y.reshape(batch, bd // batch, c, h, w).permute(0, 2, 1, 3, 4)


def inplane(x: torch.Tensor, fn2d: Callable[[torch.Tensor], torch.Tensor],
            fn3d: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply an in-plane op as 2D on folded slices (channels-last) or as its 3D twin."""
    if is_channels_last_3d(x):
        return unfold_slices(fn2d(fold_slices(x)), x.shape[0])
    return fn3d(x)


def _t3(v, first: int) -> tuple:
    return (first,) + tuple(v)


class InPlaneConv(nn.Conv2d):
    """A 1 x k x k convolution with 2D weights (same parameters in both execution paths)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 4:
            return super().forward(x)
        return inplane(
            x,
            lambda y: F.conv2d(y, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups),
            lambda y: F.conv3d(y, self.weight.unsqueeze(2), self.bias, _t3(self.stride, 1),
                               _t3(self.padding, 0), _t3(self.dilation, 1), self.groups),
        )


class InPlaneConvTranspose(nn.ConvTranspose2d):
    """A 1 x k x k transposed convolution (in-plane upsampling) with 2D weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return inplane(
            x,
            lambda y: F.conv_transpose2d(y, self.weight, self.bias, self.stride, self.padding,
                                         self.output_padding, self.groups, self.dilation),
            lambda y: F.conv_transpose3d(y, self.weight.unsqueeze(2), self.bias, _t3(self.stride, 1),
                                         _t3(self.padding, 0), _t3(self.output_padding, 0), self.groups,
                                         _t3(self.dilation, 1)),
        )


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels only (ConvNeXt style), computed in place of layout: no permutes."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch`` (BatchNorm3d; fastest, foldable into convs) or ``layer`` (channel-wise LayerNorm)."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "layer":
        return ChannelLayerNorm(channels)
    raise InputError(f"unknown norm {kind!r}; use 'batch' or 'layer' (statistics over space are not allowed)")


class UXBlock2D(nn.Module):
    """3D UX-Net's block made 2D: depthwise k x k conv, norm, pointwise inverted-bottleneck MLP, residual.

    The MLP is 1x1x1 convs (GEMMs in channels-last layout), so no permutes;
    layer scale starts the residual branch near zero as in ConvNeXt.
    """

    def __init__(self, channels: int, *, kernel: int = 7, mlp_ratio: int = 4, norm: str = "batch",
                 layer_scale: float = 1e-6):
        super().__init__()
        self.dw = InPlaneConv(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = make_norm(norm, channels)
        self.pw1 = nn.Conv3d(channels, mlp_ratio * channels, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv3d(mlp_ratio * channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels, 1, 1, 1), float(layer_scale))) if layer_scale > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.act(self.pw1(self.norm(self.dw(x)))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y


class ResBlock(nn.Module):
    """Residual block at constant size: in-plane 3x3 conv, then 3x3x3 conv across slices."""

    def __init__(self, channels: int, *, norm: str = "batch"):
        super().__init__()
        self.conv1 = InPlaneConv(channels, channels, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        return self.act(x + self.norm2(self.conv2(y)))


class ResBlockDown(nn.Module):
    """Halves the in-plane size: strided in-plane 3x3 conv, 3x3x3 conv, residual via strided 1x1 projection."""

    def __init__(self, cin: int, cout: int, *, norm: str = "batch"):
        super().__init__()
        self.conv1 = InPlaneConv(cin, cout, 3, stride=2, padding=1, bias=False)
        self.norm1 = make_norm(norm, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, cout)
        self.proj = InPlaneConv(cin, cout, 1, stride=2, bias=False)
        self.normp = make_norm(norm, cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        return self.act(self.normp(self.proj(x)) + self.norm2(self.conv2(y)))


class ResBlockUp(nn.Module):
    """Doubles the in-plane size (transposed conv), fuses the skip, 3x3x3 then in-plane 3x3 conv, residual.

    The first conv mixes slices; the second is in-plane only, which halves the
    cost at the finest levels where the decoder is memory-bound.
    """

    def __init__(self, cin: int, cskip: int, cout: int, *, norm: str = "batch"):
        super().__init__()
        self.up = InPlaneConvTranspose(cin, cout, 2, stride=2)
        cat = cout + cskip
        self.conv1 = nn.Conv3d(cat, cout, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, cout)
        self.conv2 = InPlaneConv(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, cout)
        self.proj = nn.Conv3d(cat, cout, 1, bias=False)
        self.normp = make_norm(norm, cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.up(x), skip], dim=1)
        y = self.act(self.norm1(self.conv1(z)))
        return self.act(self.normp(self.proj(z)) + self.norm2(self.conv2(y)))


class HANC3D(nn.Module):
    """Hierarchical aggregation of neighbourhood context (after ACC-UNet), 3D and made cheap.

    Inverted-bottleneck expansion, then for each n in ``depths`` (slices) a
    convolution, a max pool and an average pool over 3 x 3 x n neighbourhoods;
    the 3 x len(depths) maps are concatenated, projected back with a pointwise
    conv and added to the input. All three kinds are separable: one shared
    in-plane 3x3 pass, then a pass along D only (D is short: 12 slices), so
    the 3x3xn work costs about one 3x3 pass instead of a 3D window per n; the
    max pools are hierarchical (max over 5 = max over 3 of max over 3).
    """

    def __init__(self, channels: int, *, expansion: int = 2, depths: Sequence[int] = (3, 5, 7), norm: str = "batch"):
        super().__init__()
        depths = sorted(int(n) for n in depths)
        if any(n < 1 or n % 2 == 0 for n in depths):
            raise ValueError(f"HANC depths must be odd and >= 1, got {depths}")
        e = expansion * channels
        self.depths = depths
        self.expand = nn.Conv3d(channels, e, 1, bias=False)
        self.norm_e = make_norm(norm, e)
        self.act = nn.GELU()
        self.dw_inplane = InPlaneConv(e, e, 3, padding=1, groups=e, bias=False)
        self.dw_depth = nn.ModuleList(
            [nn.Conv3d(e, e, (n, 1, 1), padding=(n // 2, 0, 0), groups=e, bias=False) for n in depths]
        )
        self.project = nn.Conv3d(3 * len(depths) * e, channels, 1, bias=False)
        self.norm_p = make_norm(norm, channels)

    #: recompute the branch in backward instead of saving its maps (set by :func:`set_hanc_checkpointing`)
    checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return x + checkpoint(self._branch, x, use_reentrant=False)
        return x + self._branch(x)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        e = self.act(self.norm_e(self.expand(x)))
        conv_in = self.dw_inplane(e)
        max_in = inplane(e, lambda y: F.max_pool2d(y, 3, 1, 1), lambda y: F.max_pool3d(y, (1, 3, 3), 1, (0, 1, 1)))
        # average pools pad explicitly with zeros (like the convs): torch's pools refuse inputs
        # smaller than the kernel, and D may be 1
        avg_in = inplane(e, lambda y: F.avg_pool2d(F.pad(y, (1, 1, 1, 1)), 3, 1),
                         lambda y: F.avg_pool3d(F.pad(y, (1, 1, 1, 1)), (1, 3, 3), 1))
        maps = []
        prev_n, m = 1, max_in
        for n, conv in zip(self.depths, self.dw_depth):
            maps.append(conv(conv_in))
            # hierarchical max: widen the previous window from prev_n to n slices
            grow = n - prev_n + 1
            if grow > 1:
                m = F.max_pool3d(m, (grow, 1, 1), 1, (grow // 2, 0, 0))
            prev_n = n
            maps.append(m)
            maps.append(F.avg_pool3d(F.pad(avg_in, (0, 0, 0, 0, n // 2, n // 2)), (n, 1, 1), 1))
        return self.norm_p(self.project(torch.cat(maps, dim=1)))


def set_hanc_checkpointing(module: nn.Module, enabled: bool = True) -> int:
    """Recompute HANC branches during backward instead of storing them; returns how many blocks changed.

    HANC is cheap in FLOPs but stores many maps for backward (the nine-way
    concatenation, int64 max-pool indices): about a third of the hybrid's
    training activations. Training-time only; results are unchanged, except
    that BatchNorm running statistics see the recomputed forward too (PyTorch's
    usual checkpointing caveat).
    """
    n = 0
    for m in module.modules():
        if isinstance(m, HANC3D):
            m.checkpoint = bool(enabled)
            n += 1
    return n


def to_channels_last(module: nn.Module) -> nn.Module:
    """Put 5D weights in ``channels_last_3d`` and 4D (in-plane) weights in ``channels_last``, in place.

    ``Module.to(memory_format=torch.channels_last_3d)`` refuses the 2D weights of
    the in-plane convs; this converts each parameter by its rank. Feed the
    network a ``channels_last_3d`` input to use the folded 2D path.
    """
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
            elif p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return module
