"""Start a training run from a saved model's weights (fine-tuning) instead of a random initialisation.

The run's configuration records the model folder and the sha256 of its weights, so
``config.json`` and ``model.json`` say what the run started from and a changed file is
refused. The saved model must be the same network (architecture, hyper-parameters,
output channels, class values). Its own training cases must not be among this run's
validation cases: their scores would be inflated, silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Union

from spineseg.errors import InputError
from spineseg.labels import ClassInfo
from spineseg.modelfile import HEADER_FILE, ModelHeader, read_header
from spineseg.networks import resolve_hparams
from spineseg.training.presets import TrainConfig


def init_weights_spec(model_dir: Union[str, Path], config: TrainConfig, classes: Sequence[ClassInfo]) -> Dict[str, Any]:
    """``{"model": absolute folder, "sha256": weights hash}`` for ``config.init_weights``, after checking
    that the saved model is the network ``config`` trains (predicting ``classes``); InputError naming
    the difference otherwise."""
    folder = Path(model_dir).expanduser().resolve()
    if not (folder / HEADER_FILE).is_file():
        raise InputError(f"--init-weights {model_dir}: not a SpineSeg model folder (no {HEADER_FILE}); "
                         "give a folder written by 'spineseg train'")
    header = read_header(folder)
    arch = header.architecture
    wanted = resolve_hparams(config.model, dict(config.hparams))
    differences = []
    if arch.name != config.model:
        differences.append(f"architecture {arch.name!r}, this run trains {config.model!r}")
    else:
        saved = resolve_hparams(arch.name, dict(arch.hparams))
        differences += [f"{key} = {saved.get(key)!r}, this run {wanted.get(key)!r}"
                        for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]
    if arch.out_channels != config.out_channels:
        differences.append(f"{arch.out_channels} output channels, this run {config.out_channels}")
    values = [int(c.value) for c in header.classes]
    run_values = [int(c.value) for c in classes]
    if values != run_values:
        differences.append(f"class values {values}, this run {run_values}")
    if differences:
        raise InputError(f"--init-weights {folder}: a different network ({'; '.join(differences)}); "
                         "train with the same --model and --hparam values, or start from random weights")
    return {"model": str(folder), "sha256": str(header.weights.get("sha256") or "")}


def check_no_leak(spec: Dict[str, Any], val_ids: Sequence[str]) -> None:
    """Refuse validation cases that the starting model was trained on (their DSC would be inflated)."""
    header: ModelHeader = read_header(spec["model"])
    trained_on = set(header.training.get("train_cases") or [])
    leaked = sorted(trained_on & set(val_ids))
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise InputError(f"--init-weights {spec['model']}: validation cases {shown} were training cases of that "
                         "model, so their scores would be inflated; use the split it was trained with "
                         "(same --seed and --val-fraction) or other validation data")


def load_init_weights(network: Any, spec: Dict[str, Any]) -> None:
    """Copy the saved weights into ``network`` (same layout, checked by the model loader and the hash)."""
    from spineseg.modelfile import load_model

    loaded = load_model(spec["model"], device="cpu")
    actual = str(loaded.header.weights.get("sha256") or "")
    if actual != spec["sha256"]:
        raise InputError(f"--init-weights {spec['model']}: its weights changed since the run was configured "
                         f"(sha256 {actual[:12]}..., recorded {str(spec['sha256'])[:12]}...); start a new run folder")
    network.load_state_dict(loaded.network.state_dict())
