"""Model files: bit-exact round trip, header checks, and refusal of damaged or dangerous files."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from spineseg.errors import InputError  # noqa: E402
from spineseg.labels import SPINE_CLASSES, ClassInfo  # noqa: E402
from spineseg.modelfile import (  # noqa: E402
    HEADER_FILE,
    WEIGHTS_FILE,
    ModelHeader,
    default_model_path,
    import_pth,
    load_model,
    read_header,
    save_model,
)
from spineseg.networks import build_network  # noqa: E402


def _net(out_channels: int = 4, seed: int = 0, name: str = "hybrid"):
    torch.manual_seed(seed)
    net = build_network(name, out_channels=out_channels, width=2)
    # non-trivial BatchNorm buffers, so the round trip covers them too
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 1, 2, 32, 32))
    return net.eval()


def _header(**kw) -> ModelHeader:
    return ModelHeader.create("test-model", "hybrid", hparams={"width": 2},
                              training={"cases": 3, "epochs": 1}, metrics={"dsc": {"vertebra": 0.5}},
                              preprocessing={"n4": False, "normalization": "zscore"}, **kw)


@pytest.fixture()
def saved(tmp_path):
    net = _net()
    folder = save_model(tmp_path / "m", net, _header())
    return folder, net


def test_round_trip_is_bit_exact(saved):
    folder, net = saved
    loaded = load_model(folder)
    a, b = net.state_dict(), loaded.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert not loaded.network.training
    x = torch.randn(1, 1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(net(x), loaded.network(x))
    h = loaded.header
    assert h.architecture.name == "hybrid" and h.architecture.hparams["width"] == 2
    assert h.architecture.hparams["ux_kernel"] == 7  # defaults are recorded too
    assert [c.name for c in h.classes] == [c.name for c in SPINE_CLASSES] and h.out_channels == 4
    assert h.training["cases"] == 3 and h.metrics["dsc"]["vertebra"] == 0.5
    d = json.loads((folder / HEADER_FILE).read_text())
    assert d["format"] == "spineseg-model" and d["format_version"] == 1
    assert d["weights"]["file"] == WEIGHTS_FILE and len(d["weights"]["sha256"]) == 64
    assert d["classes"][1] == {"value": 2, "name": "intervertebral disc", "color": [88, 106, 215]}
    assert ModelHeader.from_dict(d).to_dict() == d


def test_compiled_or_wrapped_network_saves_plain_keys(tmp_path):
    net = _net()
    folder = save_model(tmp_path / "c", torch.compile(net), _header())  # compile is lazy: nothing compiles here
    loaded = load_model(folder)
    assert torch.equal(loaded.network.head.weight, net.head.weight)


def test_binary_and_fp16_weights(tmp_path):
    net = _net(out_channels=1)
    folder = save_model(tmp_path / "b", net, _header(task="binary"), dtype="float16")
    loaded = load_model(folder)
    assert loaded.header.task == "binary" and loaded.header.weights["dtype"] == "float16"
    assert [c.name for c in loaded.header.classes] == ["spine"]
    w = dict(loaded.network.named_parameters())["head.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, net.head.weight.half().float())
    size16 = (folder / WEIGHTS_FILE).stat().st_size
    size32 = (save_model(tmp_path / "b32", net, _header(task="binary")) / WEIGHTS_FILE).stat().st_size
    assert size16 < 0.6 * size32


def test_read_header_does_not_import_torch(saved):
    folder, _ = saved
    code = ("import sys; from spineseg.modelfile import read_header; "
            f"h = read_header({str(folder)!r}); print(h.architecture.name, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["hybrid", "False"]


def test_no_silent_overwrite(saved):
    folder, net = saved
    with pytest.raises(InputError, match="a model exists here; pass --overwrite"):
        save_model(folder, net, _header())
    save_model(folder, _net(seed=1), _header(), overwrite=True)
    assert not torch.equal(load_model(folder).network.head.weight, net.head.weight)


def test_full_disk_never_leaves_new_weights_beside_the_old_header(tmp_path, monkeypatch):
    """Replacing a model when the disk runs out between the weights and the header (the header's write
    fails with ENOSPC): the old model stays whole, weights and the header holding their sha256, with no
    temporary file left."""
    import errno
    import os

    folder = save_model(tmp_path / "m", _net(seed=0), _header())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".model.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(InputError, match="model.json: cannot write file .*free"):
        save_model(folder, _net(seed=1), _header(), overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    load_model(folder)


def test_header_must_match_network(tmp_path):
    with pytest.raises(InputError, match="does not match the network"):
        save_model(tmp_path / "x", _net(out_channels=2), _header())
    assert not (tmp_path / "x" / HEADER_FILE).exists()


def test_truncated_weights(saved):
    folder, _ = saved
    w = folder / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:-1000])
    with pytest.raises(InputError, match="truncated weights file"):
        load_model(folder)
    w.write_bytes(b"\x10\x00")
    with pytest.raises(InputError, match="truncated weights file"):
        load_model(folder)


def test_truncated_header(saved):
    folder, _ = saved
    h = folder / HEADER_FILE
    h.write_text(h.read_text()[:200])
    with pytest.raises(InputError, match="not valid JSON.*truncated"):
        read_header(folder)


def test_wrong_hash(saved):
    folder, _ = saved
    w = folder / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF  # flip one bit pattern inside the last tensor
    w.write_bytes(bytes(data))
    with pytest.raises(InputError, match="wrong sha256.*modified or damaged"):
        load_model(folder)


def _edit_header(folder: Path, fn) -> None:
    h = folder / HEADER_FILE
    d = json.loads(h.read_text())
    fn(d)
    h.write_text(json.dumps(d))


def test_unknown_architecture(saved):
    folder, _ = saved
    _edit_header(folder, lambda d: d["architecture"].update(name="transunet"))
    assert read_header(folder).architecture.name == "transunet"  # torch-free reading still works
    with pytest.raises(InputError, match="unknown architecture 'transunet'"):
        load_model(folder)


def test_unknown_hyper_parameter(saved):
    folder, _ = saved
    _edit_header(folder, lambda d: d["architecture"]["hparams"].update(depth=7))
    with pytest.raises(InputError, match="hyper-parameters do not build 'hybrid'.*no hyper-parameter 'depth'"):
        load_model(folder)


def test_class_count_mismatch_with_weights(saved):
    folder, _ = saved

    def two_classes(d):
        d["classes"] = d["classes"][:2]
        d["architecture"]["out_channels"] = 3

    _edit_header(folder, two_classes)
    with pytest.raises(InputError, match="class count mismatch: the weights have 4 output channels, the header declares 3"):
        load_model(folder)


def test_class_count_mismatch_inside_header(saved):
    folder, _ = saved
    _edit_header(folder, lambda d: d["classes"].pop())
    with pytest.raises(InputError, match="class count mismatch: multiclass with 2 classes needs 3 output channels"):
        read_header(folder)


def test_other_architecture_weights(tmp_path, saved):
    folder, _ = saved
    other = save_model(tmp_path / "r", _net(name="resunet"),
                       ModelHeader.create("r", "resunet", hparams={"width": 2}))
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    _edit_header(folder, lambda d: d["weights"].update(sha256=read_header(other).weights["sha256"]))
    with pytest.raises(InputError, match="weights do not match the header's architecture 'hybrid'"):
        load_model(folder)


@pytest.mark.parametrize("bad, message", [
    ({"format": "something"}, "not a SpineSeg model header"),
    ({"format_version": 2}, "newer than this SpineSeg supports"),
    ({"task": "regression"}, "unknown task"),
    ({"window": [12, 0, 128]}, "window must be three positive sizes"),
])
def test_bad_header_fields(saved, bad, message):
    folder, _ = saved
    _edit_header(folder, lambda d: d.update(bad))
    with pytest.raises(InputError, match=message):
        read_header(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(InputError, match="model not found"):
        read_header(tmp_path / "nothing")
    with pytest.raises(InputError, match="no model.json in this folder"):
        load_model(tmp_path)


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_never_unpickled(tmp_path, saved):
    folder, _ = saved
    marker = tmp_path / "marker"
    # 1) a pickle in place of the safetensors weights, with a matching hash in the header
    evil = pickle.dumps({"head.weight": _Payload(str(marker))}, protocol=2)
    (folder / WEIGHTS_FILE).write_bytes(evil)
    import hashlib

    _edit_header(folder, lambda d: d["weights"].update(sha256=hashlib.sha256(evil).hexdigest()))
    with pytest.raises(InputError, match="pickle/.pth checkpoint, not safetensors; SpineSeg never unpickles"):
        load_model(folder)
    # 2) a torch .pth checkpoint and a raw pickle given to import_pth (weights_only=True)
    pth = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(str(marker))}, str(pth))
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(evil)
    for f in (pth, raw):
        with pytest.raises(InputError, match="refused: not a weights-only checkpoint"):
            import_pth(f)
    assert not marker.exists()
    # the test's payload is real: plain unpickling does create the marker
    pickle.loads(evil)
    assert marker.exists()


def test_import_pth_plain_state_dict(tmp_path):
    net = _net()
    pth = tmp_path / "ok.pth"
    torch.save({"state_dict": net.state_dict()}, str(pth))
    sd = import_pth(pth)
    fresh = build_network("hybrid", out_channels=4, width=2)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.head.weight, net.head.weight)


def test_default_model_path_is_a_model_or_none():
    p = default_model_path()
    assert p is None or read_header(p).format == "spineseg-model"


def test_create_header_defaults():
    h = ModelHeader.create("b", "unetpp", task="binary")
    assert h.out_channels == 1 and h.classes[0].name == "spine"
    h = ModelHeader.create("m", "hybrid", classes=[ClassInfo(5, "a", (1, 2, 3)), ClassInfo(7, "b", (4, 5, 6))])
    assert h.out_channels == 3
    with pytest.raises(InputError, match="distinct"):
        ModelHeader.create("m", "hybrid", classes=[ClassInfo(1, "a", (1, 2, 3)), ClassInfo(1, "b", (4, 5, 6))])
