"""The network family: contract shapes, size-agnosticism, window independence, budget, training signal."""
from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from spineseg.errors import InputError  # noqa: E402
from spineseg.networks import build_network, network_defaults, network_names  # noqa: E402
from spineseg.networks.blocks import set_hanc_checkpointing, to_channels_last  # noqa: E402

NAMES = list(network_names())
HYBRID_FAMILY = ["hybrid", "no-ux", "no-hanc", "resunet"]

# tiny widths: the structure is the default one, only the channel counts shrink
TINY = {
    "hybrid": {"width": 2}, "no-ux": {"width": 2}, "no-hanc": {"width": 2}, "resunet": {"width": 2},
    "unetpp": {"features": [2, 2, 4, 4, 8, 2]},
    "nnunet-like": {"filters": [2, 4, 4, 8, 8, 8]},
}


def tiny(name: str, out_channels: int = 4, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_network(name, out_channels=out_channels, **{**TINY[name], **kw})


def test_registry_names_and_defaults():
    assert NAMES == ["hybrid", "no-ux", "no-hanc", "resunet", "unetpp", "nnunet-like"]
    assert network_defaults("hybrid")["width"] == 16
    with pytest.raises(InputError, match="unknown network architecture 'vnet'"):
        build_network("vnet", out_channels=2)
    with pytest.raises(InputError, match="no hyper-parameter 'depth'"):
        build_network("hybrid", out_channels=2, depth=3)


def test_registry_import_does_not_import_torch():
    code = "import sys, spineseg.networks as n; n.network_names(); n.network_defaults('hybrid'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name,out_channels", [(n, 1) for n in NAMES] + [("hybrid", 3), ("unetpp", 2), ("nnunet-like", 4)])
def test_forward_backward_shape(name, out_channels):
    net = tiny(name, out_channels).train()
    x = torch.randn(2, 1, 2, 32, 48, requires_grad=True)
    y = net(x)
    assert y.shape == (2, out_channels, 2, 32, 48)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert net.spec["name"] == name and net.spec["out_channels"] == out_channels


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(12, 32, 48), (1, 40, 24), (27, 20, 33)])
def test_any_slice_count_and_inplane_size(name, shape):
    net = tiny(name).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *shape))
    assert y.shape == (1, 4) + shape
    assert torch.isfinite(y).all()


def test_channel_layer_norm_option():
    """norm="layer" (LayerNorm over channels only, no statistics over space) replaces every BatchNorm and runs."""
    net = tiny("hybrid", norm="layer").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    x = torch.randn(1, 1, 2, 32, 48)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 4, 2, 32, 48) and torch.isfinite(y).all()


def test_slice_axis_is_used_not_downsampled():
    """A change in one slice reaches its neighbours (3D blocks) and D keeps full resolution."""
    net = tiny("hybrid").eval()
    x = torch.randn(1, 1, 9, 32, 32)
    x2 = x.clone()
    x2[0, 0, 4] += 5.0
    with torch.no_grad():
        d = (net(x) - net(x2)).abs().amax(dim=(0, 1, 3, 4))
    assert d[3] > 0 and d[5] > 0 and d[4] > 0


@pytest.mark.parametrize("name", ["hybrid", "resunet"])
def test_determinism_for_a_seed(name):
    a, b, c = tiny(name, seed=3), tiny(name, seed=3), tiny(name, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    x = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_channels_last_path_matches():
    """The folded-2D channels-last path computes the same as the plain NCDHW path."""
    net = tiny("hybrid", width=4).eval()
    x = torch.randn(2, 1, 5, 64, 32)
    with torch.no_grad():
        ref = net(x)
        to_channels_last(net)
        out = net(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,win,margin", [("hybrid", 576, 272), ("unetpp", 256, 112)])
def test_same_output_on_window_and_larger_tile(name, win, margin):
    """Same weights, eval mode: a window and a larger tile agree voxel for voxel away from the window border.

    The window is cut from the tile at a multiple of 32 (the stride grid) and is
    larger than twice the receptive-field radius, measured here by gradient, so
    the compared centre never sees the window's zero padding (the hybrid's
    in-plane radius is about 245 voxels). Both keep all slices. Train mode (batch
    statistics over the window) breaks the equality, which shows the comparison
    can fail.
    """
    net = tiny(name).eval()
    off, depth = 64, 1  # the tile reaches beyond the window on every side (non-square)
    torch.manual_seed(1)
    tile = torch.randn(1, 1, depth, win + 2 * off, win + off + 32)
    window = tile[..., off:off + win, off:off + win].clone().requires_grad_(True)
    c = slice(margin, win - margin)
    out = net(window)
    out[..., c, c].sum().backward()
    g = window.grad[0, 0].abs().amax(dim=0)
    edge = max(g[0].max(), g[-1].max(), g[:, 0].max(), g[:, -1].max())
    assert g.max() > 0 and edge == 0, "the compared centre's receptive field reaches the window border"
    with torch.no_grad():
        a = out.detach()[..., c, c]
        b = net(tile)[..., off:off + win, off:off + win][..., c, c]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        net.train()
        a_train = net(window.detach())[..., c, c]
        b_train = net(tile)[..., off:off + win, off:off + win][..., c, c]
    assert (a_train - b_train).abs().max() > 1e-3


def test_hybrid_default_budget():
    """Default width: <= 10 M parameters and <= 40 GFLOP per 1x1x12x128x128 window (counted on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = build_network("hybrid", out_channels=4)
        with FlopCounterMode(display=False) as counter:
            y = net(torch.empty(1, 1, 12, 128, 128))
    assert y.shape == (1, 4, 12, 128, 128)
    assert sum(p.numel() for p in net.parameters()) <= 10_000_000
    assert counter.get_total_flops() <= 40e9


def test_hanc_checkpointing_gives_the_same_gradients():
    import copy

    a = tiny("hybrid", width=4).train()
    b = copy.deepcopy(a)
    assert set_hanc_checkpointing(b, True) == 3
    x = torch.randn(2, 1, 3, 32, 32)
    for net in (a, b):
        net(x).square().mean().backward()
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=k)


def _phantom_batch():
    """A small phantom batch (bright spine-like structures with a bias field and noise)."""
    try:
        from spineseg.phantom import make_phantom
    except ImportError:
        pytest.skip("spineseg.phantom not available yet")
    import numpy as np
    import SimpleITK as sitk

    from spineseg.geometry import CanonicalFrame

    ph = make_phantom(size=(128, 128, 4), spacing=(1.38, 1.38, 4.4), seed=0)
    frame = CanonicalFrame.of(ph.image)
    img = frame.to_canonical(sitk.GetArrayFromImage(ph.image)).astype(np.float32)
    lab = frame.to_canonical(sitk.GetArrayFromImage(ph.label)).astype(np.int64)
    img = (img - img.mean()) / (img.std() + 1e-6)
    crop = (slice(1, 3), slice(32, 96), slice(32, 96))  # two slices through all three structures
    x = torch.from_numpy(np.ascontiguousarray(img[crop]))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(lab[crop]))[None]
    assert set(torch.unique(y).tolist()) == {0, 1, 2, 3}
    return x, y


@pytest.mark.parametrize("name", ["hybrid", "unetpp"])
def test_a_few_steps_reduce_the_loss(name):
    x, y = _phantom_batch()
    net = tiny(name, out_channels=4, **({"width": 4} if name == "hybrid" else {})).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses
