#!/usr/bin/env python3
"""One Markdown table from training runs on the same split: validation DSC per class and union, and the budget.

    python scripts/peer_table.py runs/hybrid runs/nnunet-like [--title TEXT]

Reads each run's ``model/model.json`` (``metrics.validation``: means over the validation cases, as
``spineseg train`` wrote them through the inference engine) and ``split.json``, and refuses runs
whose validation cases differ: a comparison is only fair on the same cases. Hyper-parameters are
shown where they differ from the network's defaults; "seconds" is the run's wall time, the final
validation included.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spineseg.networks import network_defaults  # noqa: E402


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(runs: Sequence[Path], title: str) -> str:
    rows: List[str] = []
    split = None
    classes: List[str] = []
    for run in runs:
        header_path = run / "model" / "model.json"
        if not header_path.is_file():
            raise SystemExit(f"peer_table: {header_path} not found; did the run in {run} finish?")
        header = json.loads(header_path.read_text(encoding="utf-8"))
        val = sorted(json.loads((run / "split.json").read_text(encoding="utf-8"))["validation"])
        if split is None:
            split = val
        elif val != split:
            raise SystemExit(f"peer_table: {run} was validated on other cases than {runs[0]}; compare runs "
                             "of the same split")
        metrics = (header.get("metrics") or {}).get("validation") or {}
        names = [c["name"] for c in header["classes"]]
        classes = classes or names
        training = header.get("training") or {}
        spec = header["architecture"]
        per_class = [_fmt((metrics.get(n) or {}).get("dsc")) for n in classes]
        union = metrics.get("spine") or {}
        ppv = [(metrics.get(n) or {}).get("ppv") for n in classes]
        sens = [(metrics.get(n) or {}).get("sensitivity") for n in classes]
        mean = lambda xs: None if any(x is None for x in xs) else sum(xs) / len(xs)  # noqa: E731
        defaults = network_defaults(spec["name"])
        hp = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("hparams", {}).items()) if defaults.get(k) != v)
        rows.append(f"| {spec['name']}{f' ({hp})' if hp else ''} | {training.get('windows', 'n/a')} | "
                    f"{training.get('seconds', 'n/a')} | {_fmt(metrics.get('mean_dsc'))} | " + " | ".join(per_class)
                    + f" | {_fmt(union.get('dsc'))} | {_fmt(mean(ppv))} | {_fmt(mean(sens))} |")
    head = ("| model | windows trained | seconds | mean fg DSC | " + " | ".join(f"{c} DSC" for c in classes)
            + " | union DSC | PPV | sens. |")
    rule = "|---|---:|---:|---:|" + "---:|" * len(classes) + "---:|---:|---:|"
    cases = ", ".join(split or [])
    return f"## {title}\n\nValidation cases ({len(split or [])}): {cases}\n\n{head}\n{rule}\n" + "\n".join(rows) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders of spineseg train")
    p.add_argument("--title", default="Peer comparison")
    args = p.parse_args(argv)
    print(table(args.runs, args.title), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
