"""Read a zoo family folder: ``manifest.json`` plus one ``<name>.safetensors`` per model."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from hmu_diag.errors import CheckpointError

from .architectures import MLP, mlp

MANIFEST = "manifest.json"
FORMAT = "hmu-diag-zoo/1"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(folder: str | Path) -> dict:
    """The parsed ``manifest.json`` of a family folder."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no zoo manifest here (build it with python -m models_zoo.build)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load_model(folder: str | Path, entry: dict) -> MLP:
    """The model of one manifest entry, its weights loaded strictly from ``folder / entry["file"]``."""
    model = mlp(entry["hyperparameters"]["widths"])
    model.load_state_dict(load_file(Path(folder) / entry["file"]), strict=True)
    return model.eval()


def family_table(folder: str | Path) -> pd.DataFrame:
    """One row per model of a family folder: name, the varied hyper-parameters, epochs, n_train, n_params,
    train_accuracy, heldout_accuracy (fractions)."""
    manifest = read_manifest(folder)
    rows = [{"model": e["name"], **{k: e["hyperparameters"][k] for k in manifest["varied"]},
             "epochs": e["epochs"], "n_train": e["n_train"], "n_params": e["n_params"],
             "train_accuracy": e["train_accuracy"], "heldout_accuracy": e["heldout_accuracy"]}
            for e in manifest["models"]]
    return pd.DataFrame(rows)
