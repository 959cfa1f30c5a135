"""The CLI's shared contract: exit codes, one-line errors, and a JSON error event for programs."""
from __future__ import annotations

import json

from spineseg.cli import main


def test_every_command_ends_a_json_stream_with_an_error_event(capsys, tmp_path):
    """Programs (the Slicer modules) read stdout only: a failure must reach them as an event too."""
    for argv in (["n4", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--json"],
                 ["info", str(tmp_path / "missing.nii.gz"), "--json"]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        event = json.loads(out.strip().splitlines()[-1])
        assert event == {"event": "error", "message": f"{tmp_path / 'missing.nii.gz'}: file not found; check the path",
                         "exit_code": 2}
        assert err.strip().splitlines() == [f"spineseg: error: {event['message']}"]
    assert not (tmp_path / "o.nii.gz").exists()


def test_without_json_nothing_goes_to_stdout_on_error(capsys, tmp_path):
    assert main(["info", str(tmp_path / "missing.nii.gz")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("spineseg: error: ")


def test_a_bug_exits_1_with_the_traceback(capsys, monkeypatch, tmp_path):
    import spineseg.commands.info as info

    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(info, "run", broken)
    assert main(["info", "x", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["exit_code"] == 1 and "ZeroDivisionError: boom" in err
