"""Training's validation on a saved model: its cost per epoch and the DSC it reports.

Runs :class:`spineseg.training.validation.Validator` (the inference engine's path, as used
after every validation epoch) on a model's own validation cases, with the model's training
configuration, at the configuration's validation overlap and at segment's default. Prints one
row per overlap: seconds for the first validation (preprocessing, N4 included, plus the
network) and for a later one (the network only: the preprocessed inputs are kept), and the
mean DSC, beside the validation mean DSC stored in the model's ``model.json``.

    .venv/bin/python benchmarks/validation.py [MODEL] [DATA] [--threads N] [--cases ID ...]

Defaults: the bundled model and ``../shared/data/spider-t2space``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=str(ROOT / "Resources" / "Models" / "spineseg-default"))
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "spider-t2space"))
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--cases", nargs="+", help="case ids (default: the model's validation cases)")
    args = p.parse_args(argv)

    import torch

    from spineseg.inference.backends import open_backend
    from spineseg.inference.sliding import DEFAULT_OVERLAP
    from spineseg.metrics import pool_metrics
    from spineseg.modelfile import read_header
    from spineseg.training.data import find_cases
    from spineseg.training.presets import TrainConfig
    from spineseg.training.validation import Validator

    torch.set_num_threads(args.threads)
    header = read_header(args.model)
    config = TrainConfig.from_dict(dict(header.training["config"]))
    wanted: List[str] = list(args.cases or header.training.get("validation_cases") or [])
    available = {c.id: c for c in find_cases(args.data)}
    missing = [c for c in wanted if c not in available]
    if not wanted or missing:
        print(f"benchmarks/validation.py: cases {missing or 'none'} not in {args.data}; pass --cases", file=sys.stderr)
        return 2
    backend = open_backend(args.model, "torch", "cpu")
    stored = (header.metrics.get("validation") or {}).get("mean_dsc")
    print(f"{header.name}: {len(wanted)} cases, torch threads {args.threads}; model.json validation mean DSC "
          f"{stored if stored is None else f'{stored:.4f}'} (as stored at training time)\n")
    print("| overlap | first validation s | later validation s | mean DSC |")
    print("|---|---|---|---|")
    for overlap in sorted({float(config.val_overlap), DEFAULT_OVERLAP}):
        validator = Validator({c: available[c] for c in wanted}, config.replace(val_overlap=overlap), backend.info)
        t0 = time.perf_counter()
        validator.score(backend)
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        cases = validator.score(backend)
        later = time.perf_counter() - t1
        mean = pool_metrics(cases, list(backend.info.classes))["mean_dsc"]
        print(f"| {overlap:g} | {first:.1f} | {later:.1f} | {mean:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
