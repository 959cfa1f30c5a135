"""The background-job helpers the Slicer module uses: command line, JSON progress, failures, cancel."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spineseg.labels import DISC, VERTEBRA
from spineseg.modelfile import ModelHeader
from spineseg.moduleslogic import model_registry, process
from spineseg.moduleslogic.model_registry import add_user_model, model_summary, result_classes, user_model_dirs
from spineseg.moduleslogic.process import Job, child_environment, error_line, failure_message, format_eta, progress_text
from spineseg.moduleslogic.requirements import Requirement, ensure_requirements, missing_requirements, restart_needed
from spineseg.moduleslogic.segment_command import SegmentOptions, segment_command
from spineseg.progress import json_line


# ----------------------------------------------------------------- command line
def test_segment_command_full():
    opts = SegmentOptions(model="/m/model", device="cuda:1", backend="torch", n4=False, n4_shrink=2, overwrite=True)
    argv = segment_command("/bin/PythonSlicer", ["/in/a.nrrd"], "/out/a_seg.nii.gz", opts)
    assert argv == ["/bin/PythonSlicer", "-m", "spineseg", "segment", "/in/a.nrrd", "-o", "/out/a_seg.nii.gz",
                    "--model", "/m/model", "--device", "cuda:1", "--backend", "torch", "--no-n4",
                    "--n4-shrink", "2", "--overwrite", "--json"]


def test_segment_command_defaults_leave_cli_defaults():
    argv = segment_command("py", ["x.nii.gz", "y.nii.gz"], "out", SegmentOptions())
    assert argv == ["py", "-m", "spineseg", "segment", "x.nii.gz", "y.nii.gz", "-o", "out",
                    "--device", "auto", "--backend", "onnx", "--json"]
    assert "--n4" in segment_command("py", ["x"], "o", SegmentOptions(n4=True))


def test_segment_command_parses_with_the_real_cli_when_present():
    """If infer's ``segment`` sub-command exists, our argv must be accepted by its parser."""
    from spineseg.cli import build_parser

    parser = build_parser()
    sub = [a for a in parser._actions if a.dest == "command"][0]
    if "segment" not in sub.choices:
        pytest.skip("spineseg segment not written yet")
    argv = segment_command("py", ["a.nii.gz"], "o.nii.gz",
                           SegmentOptions(model="m", device="cpu", backend="onnx", n4=False, n4_shrink=2, overwrite=True))
    args = parser.parse_args(argv[3:])
    assert args.command == "segment"


@pytest.mark.parametrize("bad", [SegmentOptions(device="gpu"), SegmentOptions(backend="tf"),
                                 SegmentOptions(n4_shrink=0), SegmentOptions(device="cuda:x")])
def test_segment_command_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        segment_command("py", ["a"], "o", bad)
    with pytest.raises(ValueError, match="no input"):
        segment_command("py", [], "o", SegmentOptions())


def test_child_environment_puts_package_first(tmp_path):
    env = child_environment({"PYTHONPATH": os.pathsep.join(["/a", str(tmp_path)]), "X": "1"}, extra_path=tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/a"]
    assert env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert child_environment({})["PYTHONPATH"] == str(process.package_root())
    assert (process.package_root() / "spineseg" / "__init__.py").is_file()


# ----------------------------------------------------------------- progress and failures
def test_progress_text_and_eta():
    assert progress_text({"event": "progress", "fraction": 0.421, "eta_s": 3.1, "message": "inference"}) == \
        "Inference: 42% (about 3 s left)"
    assert progress_text({"event": "progress", "fraction": 1.5, "eta_s": None, "message": ""}) == "Working: 100%"
    assert progress_text({"event": "progress", "fraction": 1.0, "eta_s": 0.0, "message": "done"}) == "Done: 100%"
    assert format_eta(0.2) == "less than 1 s left"
    assert format_eta(125) == "about 2 min left"
    assert format_eta(7200) == "about 2.0 h left"
    assert format_eta(None) == "" and format_eta(float("nan")) == "" and format_eta(-1) == ""


def test_failure_messages_are_one_sentence():
    cases = [
        failure_message(2, stderr_lines=["spineseg: error: scan.nii: not a 3D image; pass a volume"]),
        failure_message(2, error_event={"event": "error", "message": "model.json missing", "exit_code": 2}),
        failure_message(130),
        failure_message(0, cancelled=True),
        failure_message(1, stderr_lines=["Traceback (most recent call last):", "  File x", "ValueError: boom"]),
        failure_message(1, stderr_lines=["ModuleNotFoundError: No module named 'onnxruntime'"]),
        failure_message(-9),
        failure_message(3),
    ]
    for msg in cases:
        assert msg.endswith(".") and "\n" not in msg and msg[0].isupper(), msg
    assert cases[0] == "Segmentation failed: scan.nii: not a 3D image; pass a volume."
    assert "model.json missing" in cases[1]
    assert "cancelled" in cases[2] and "cancelled" in cases[3]
    assert "ValueError: boom" in cases[4] and "internal error" in cases[4]
    assert "'onnxruntime' is missing" in cases[5]
    assert "signal 9" in cases[6]
    assert "exit code 3" in cases[7]


def test_error_line_prefers_cli_error():
    assert error_line(["warn", "spineseg: error: bad file", "trailing"]) == "bad file"
    assert error_line(["", "  "]) == ""
    assert error_line(["a", "b"]) == "b"


# ----------------------------------------------------------------- the job, with fake CLIs
def _script(tmp_path: Path, body: str) -> list:
    path = tmp_path / "fake_cli.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_job_reads_progress_done_and_noise(tmp_path):
    done = {"outputs": [{"input": "a", "output": "b", "classes": [{"value": 1, "name": "vertebra",
                                                                      "color": [1, 2, 3]}], "seconds": 0.1}]}
    lines = [json_line("progress", fraction=0.5, eta_s=1.0, message="inference"), "not json",
             json_line("progress", fraction=1.0, eta_s=0.0, message="inference"), json_line("done", **done)]
    argv = _script(tmp_path, f"""
        import sys, time
        for line in {lines!r}:
            print(line, flush=True)
            time.sleep(0.02)
        print("a warning", file=sys.stderr)
        """)
    job = Job(argv).start()
    seen = []
    rc = job.wait(timeout=30, on_event=seen.append)
    assert rc == 0 and job.succeeded
    assert [e["event"] for e in seen] == ["progress", "progress", "done"]
    assert job.done["outputs"][0]["classes"][0]["name"] == "vertebra"
    assert job.last_progress["fraction"] == 1.0
    assert list(job.stdout_other) == ["not json"]
    assert list(job.stderr_lines) == ["a warning"]
    assert job.poll() == []  # nothing more


def test_job_poll_does_not_block(tmp_path):
    argv = _script(tmp_path, """
        import time
        time.sleep(30)
        """)
    job = Job(argv).start()
    try:
        t0 = time.monotonic()
        assert job.poll() == [] and job.running
        assert time.monotonic() - t0 < 0.5
    finally:
        job.cancel()
        job.wait(timeout=10)


def test_job_error_event_and_exit_code(tmp_path):
    argv = _script(tmp_path, f"""
        import sys
        print({json_line("error", message="input.nii: file not found; check the path", exit_code=2)!r}, flush=True)
        print("spineseg: error: input.nii: file not found; check the path", file=sys.stderr)
        sys.exit(2)
        """)
    job = Job(argv).start()
    assert job.wait(timeout=30) == 2
    assert not job.succeeded
    assert job.failure() == "Segmentation failed: input.nii: file not found; check the path."


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_the_whole_tree(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    argv = _script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print({json_line("progress", fraction=0.1, eta_s=None, message="n4")!r}, flush=True)
        time.sleep(60)
        """)
    job = Job(argv).start()
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    t0 = time.monotonic()
    job.cancel()
    rc = job.wait(timeout=15)
    assert time.monotonic() - t0 < 10
    assert job.cancelled and not job.succeeded and rc != 0
    assert "cancelled" in job.failure()
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "grandchild survived the cancel"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reparented to init, not yet reaped) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_cancel_after_finish_is_harmless(tmp_path):
    job = Job(_script(tmp_path, "print('ok')")).start()
    assert job.wait(timeout=30) == 0
    job.cancel()
    assert not job.cancelled and job.succeeded


# ----------------------------------------------------------------- dependencies and models
def test_missing_requirements():
    have = {"numpy", "SimpleITK", "safetensors"}
    missing = missing_requirements("onnx", importable=lambda m: m in have)
    assert [r.module for r in missing] == ["onnxruntime"]
    missing = missing_requirements("torch", importable=lambda m: m in have)
    assert [(r.module, r.via_pytorch_utils) for r in missing] == [("torch", True), ("monai", False)]
    assert missing_requirements("onnx", importable=lambda m: True) == []
    with pytest.raises(ValueError):
        missing_requirements("tf")
    # the real check runs without importing anything heavy
    assert all(isinstance(r, Requirement) for r in missing_requirements("onnx"))


def test_restart_needed():
    torch_req = Requirement("torch", "torch", True)
    assert restart_needed([torch_req], loaded_modules=["torch", "numpy"])
    assert not restart_needed([torch_req], loaded_modules=["numpy"])
    assert not restart_needed([])


def test_model_summary(tmp_path):
    """The panel's model line: the header as the core reads it, or the core's reason it cannot be used."""
    assert model_summary(None) == "No model folder chosen."
    assert model_summary(Path(".")) == "No model folder chosen."
    assert "no model.json" in model_summary(tmp_path)
    (tmp_path / "model.json").write_text("{oops")
    assert "not valid JSON" in model_summary(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    assert "not a SpineSeg model header" in model_summary(tmp_path)
    header = ModelHeader.create("demo", "hybrid", classes=[VERTEBRA, DISC])
    header.onnx = {"file": "model.onnx", "sha256": "0" * 64}
    (tmp_path / "model.json").write_text(header.to_json())
    assert model_summary(tmp_path) == "demo (hybrid + ONNX): vertebra, intervertebral disc"


def test_bundled_model_dir_is_none_or_a_model():
    path = model_registry.bundled_model_dir()
    assert path is None or (path / "model.json").is_file()


def test_result_classes(tmp_path):
    done = {"event": "done", "outputs": [{"classes": [{"value": 1, "name": "spine", "color": [1, 2, 3]}]}]}
    assert result_classes(done)[0]["name"] == "spine"
    (tmp_path / "model.json").write_text(ModelHeader.create("m", "hybrid", classes=[DISC]).to_json())
    assert result_classes({"event": "done", "outputs": [{}]}, tmp_path) == [DISC.to_dict()]
    with pytest.raises(ValueError, match="names no classes"):
        result_classes(None, None)


def test_missing_spineseg_module_is_a_bug_not_a_package_to_install():
    msg = failure_message(1, error_event={"event": "error", "message": "No module named 'spineseg.modelfile'",
                                          "exit_code": 1})
    assert "internal error" in msg and "install" not in msg


def test_job_with_the_real_cli_reports_bad_input(tmp_path):
    """The real ``spineseg segment`` run the way the Slicer module runs it: a missing input exits 2
    with an error event, and the module's sentence names the file; nothing is written."""
    from spineseg.cli import build_parser

    sub = [a for a in build_parser()._actions if a.dest == "command"][0]
    if "segment" not in sub.choices:
        pytest.skip("spineseg segment not written yet")
    missing = tmp_path / "missing.nii.gz"
    out = tmp_path / "out" / "seg.nii.gz"
    argv = segment_command(sys.executable, [str(missing)], str(out),
                           SegmentOptions(model=str(tmp_path), device="cpu", backend="onnx", n4=False))
    job = Job(argv, env=child_environment(), cwd=str(tmp_path)).start()
    assert job.wait(timeout=120) == 2
    assert job.error is not None and job.error["exit_code"] == 2
    assert job.failure() == f"Segmentation failed: {missing}: file not found; check the path."
    assert not out.exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_job_finishes_when_a_leftover_grandchild_holds_stdout(tmp_path):
    argv = _script(tmp_path, f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits stdout
        print({json_line("done", outputs=[])!r}, flush=True)
        """)
    job = Job(argv).start()
    job.linger_s = 0.5
    t0 = time.monotonic()
    assert job.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 10
    assert job.done is not None and job.succeeded


@pytest.mark.slow
def test_end_to_end_with_the_real_cli_and_an_untrained_model(tmp_path):
    """What the Slicer module does outside MRML: a volume file -> ``spineseg segment --json`` in a
    background job -> a label file on the input grid -> one segment spec per model class."""
    pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    sitk = pytest.importorskip("SimpleITK")
    try:
        from spineseg.modelfile import ModelHeader, save_model
        from spineseg.networks import build_network
    except ImportError:
        pytest.skip("model files or networks not written yet")
    from spineseg.terminology import label_to_segment_ids, segment_specs

    net = build_network("hybrid", out_channels=4, width=8)
    hparams = net.spec["hparams"] if isinstance(net.spec, dict) else net.spec.hparams
    save_model(tmp_path / "model", net, ModelHeader.create("tiny-untrained", "hybrid", hparams=hparams,
                                                           window=(4, 64, 64)))
    image = sitk.GetImageFromArray((np.random.default_rng(0).random((5, 70, 64)) * 100).astype("float32"))
    image.SetSpacing((0.7, 0.7, 4.4))
    image.SetOrigin((3.0, 4.0, 5.0))
    sitk.WriteImage(image, str(tmp_path / "input.nrrd"))
    argv = segment_command(sys.executable, [str(tmp_path / "input.nrrd")], str(tmp_path / "seg.nrrd"),
                           SegmentOptions(model=str(tmp_path / "model"), device="cpu", backend="torch", n4=False))
    job = Job(argv, env=child_environment(), cwd=str(tmp_path)).start()
    fractions = []
    rc = job.wait(timeout=300, on_event=lambda e: fractions.append(e["fraction"]) if e["event"] == "progress" else None)
    assert rc == 0 and job.succeeded, job.failure()
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    label = sitk.ReadImage(str(tmp_path / "seg.nrrd"))
    assert label.GetSize() == image.GetSize() and label.GetOrigin() == image.GetOrigin()
    assert label.GetSpacing() == image.GetSpacing() and label.GetDirection() == image.GetDirection()
    assert int(sitk.GetArrayFromImage(label).max()) <= 3
    specs = segment_specs(result_classes(job.done, tmp_path / "model"))
    assert label_to_segment_ids(specs) == ["vertebra", "intervertebral_disc", "spinal_canal"]


def test_add_user_model_dedupes_and_accepts_qsettings_shapes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert add_user_model(None, a) == [str(a)]
    assert add_user_model("", a) == [str(a)]
    assert add_user_model(str(b), a) == [str(a), str(b)]
    assert add_user_model((str(b), str(a)), tmp_path / "x" / ".." / "a") == [str(a), str(b)]


def test_newest_registered_model_stays_among_the_entries_the_path_field_offers(tmp_path):
    """ctkPathLineEdit offers the first PATH_HISTORY_SHOWN stored entries: the newest must be one of them,
    however many models were registered before (from the 6th on it was not)."""
    from spineseg.moduleslogic.model_registry import PATH_HISTORY_SHOWN

    stored = None
    for i in range(PATH_HISTORY_SHOWN + 3):
        model = tmp_path / f"model{i}"
        stored = add_user_model(stored, model)
        assert str(model.resolve()) in stored[:PATH_HISTORY_SHOWN], i


def test_user_model_dirs_lists_existing_models_newest_first(tmp_path):
    old, new, gone = tmp_path / "old", tmp_path / "new", tmp_path / "gone"
    for d in (old, new):
        d.mkdir()
        (d / "model.json").write_text("{}")
    assert user_model_dirs([str(new), str(gone), str(old)]) == [new, old]
    assert user_model_dirs(str(old)) == [old]
    assert user_model_dirs(None) == []


# ----------------------------------------------------------------- installing requirements
class FakeSlicerUtil:
    """Records what ``ensure_requirements`` asks of ``slicer.util``; answers confirmations with ``answer``."""

    def __init__(self, answer=True):
        self.answer = answer
        self.calls = []

    def errorDisplay(self, text, windowTitle=""):
        self.calls.append(("error", text))

    def confirmOkCancelDisplay(self, text, windowTitle=""):
        self.calls.append(("confirm", text))
        return self.answer

    def confirmYesNoDisplay(self, text, windowTitle=""):
        self.calls.append(("restart?", text))
        return False

    def pip_install(self, specs):
        self.calls.append(("pip", list(specs)))

    def tryWithErrorDisplay(self, message, waitCursor=False):
        import contextlib

        return contextlib.nullcontext()


def test_ensure_requirements_installs_torch_through_the_pytorch_extension_and_the_rest_with_pip(monkeypatch):
    from spineseg.moduleslogic import requirements

    monkeypatch.setattr(requirements, "restart_needed", lambda installed, loaded: False)
    installed = set()
    util = FakeSlicerUtil()

    def torch_installer(version):
        installed.add("torch")
        util.calls.append(("torch", version))
        return True

    util.pip_install = lambda specs: (util.calls.append(("pip", list(specs))), installed.add("monai"))
    importable = lambda module: module in installed or module in ("numpy", "SimpleITK", "safetensors")  # noqa: E731
    assert ensure_requirements("torch", util, title="SpineSeg Training", install_torch=torch_installer,
                               importable=importable)
    assert [c[0] for c in util.calls] == ["confirm", "torch", "pip"]
    assert "SpineSeg Training needs these Python packages: torch, monai" in util.calls[0][1]
    assert util.calls[1:] == [("torch", ">=2.1"), ("pip", ["monai>=1.3"])]
    monkeypatch.setattr(requirements, "restart_needed", lambda installed, loaded: True)  # an old torch was loaded
    installed.clear()
    util.calls.clear()
    assert not ensure_requirements("torch", util, title="SpineSeg Training", install_torch=torch_installer,
                                   importable=importable)
    assert util.calls[-1][0] == "restart?"


def test_ensure_requirements_never_installs_without_consent_or_the_pytorch_extension():
    nothing = lambda module: False  # noqa: E731
    util = FakeSlicerUtil(answer=False)
    assert not ensure_requirements("onnx", util, title="SpineSeg UNet", importable=nothing)
    assert [c[0] for c in util.calls] == ["confirm"]
    util = FakeSlicerUtil()
    assert not ensure_requirements("torch", util, title="SpineSeg UNet", install_torch=None, importable=nothing)
    assert [c[0] for c in util.calls] == ["error"] and "PyTorch extension" in util.calls[0][1]
    util = FakeSlicerUtil()
    assert not ensure_requirements("onnx", util, title="SpineSeg UNet", interactive=False, importable=nothing)
    assert util.calls == []
    assert ensure_requirements("onnx", FakeSlicerUtil(), title="x", importable=lambda m: True)
