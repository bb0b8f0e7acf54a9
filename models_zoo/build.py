"""Train zoo families and write their checkpoints and manifests.

    python -m models_zoo.build --list
    python -m models_zoo.build --family batch_size              # -> models_zoo/digits/batch_size/
    python -m models_zoo.build --family mnist5k_batch_size --jobs 2   # -> .cache/zoo/mnist5k_batch_size/
    python -m models_zoo.build --all --out /tmp/zoo             # -> /tmp/zoo/<family>/ for every family

Each family folder gets ``<model>.safetensors`` (float32 state dict, keys ``fc1.weight``, ``fc1.bias``, ...;
the safetensors metadata repeats the model's manifest entry) and ``manifest.json``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import safetensors
import torch
from safetensors.torch import save_file

from hmu_diag.errors import HmuDiagError

from . import data
from .architectures import n_params
from .families import FAMILIES, Family, Member, get_family
from .manifest import FORMAT, MANIFEST, sha256
from .train import PROTOCOL, TrainResult, train


def _train_member(dataset: str, member: Member) -> TrainResult:
    return train(data.load(dataset), member.config)


def _entry(family: Family, member: Member, result: TrainResult) -> dict:
    return {
        "name": member.name,
        "file": f"{member.name}.safetensors",
        "family": family.name,
        "dataset": family.dataset,
        "architecture": "mlp",
        "hyperparameters": member.config.as_dict(),
        "seed": member.config.seed,
        "epochs": member.config.epochs,
        "train_accuracy": result.train_accuracy,
        "train_accuracy_clean": result.train_accuracy_clean,
        "heldout_accuracy": result.heldout_accuracy,
        "heldout_correct": result.heldout_correct,
        "n_heldout": result.n_heldout,
        "n_train": result.n_train,
        "n_params": n_params(result.model),
    }


def _data_record(name: str) -> dict:
    source = data.SOURCES[name]
    ds = data.load(name)
    dist = data.md.distribution(source.distribution)
    return {
        "name": name,
        "source": f"{source.distribution}=={dist.version}:{source.member}",
        "features": f"pixel / {source.scale:g} (in [0, 1])",
        "split": f"stratified, per class round({source.heldout_fraction} * n_class) held out, "
                 f"numpy.random.RandomState({data.SPLIT_SEED})",
        "n_train": len(ds.y_train),
        "n_heldout": len(ds.y_heldout),
    }


def build_family(family: Family, folder: Path | None = None, *, jobs: int = 1, log=print) -> dict:
    """Train every member of ``family``, save it under ``folder`` (default: the family's home) and return
    the manifest written there."""
    folder = Path(folder) if folder is not None else family.default_dir
    folder.mkdir(parents=True, exist_ok=True)
    data.load(family.dataset)  # fail early with a clear message if the data are missing
    start = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_train_member, [family.dataset] * len(family.members), family.members))
    else:
        results = [_train_member(family.dataset, m) for m in family.members]
    entries = []
    for member, result in zip(family.members, results):
        entry = _entry(family, member, result)
        path = folder / entry["file"]
        tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in result.model.state_dict().items()}
        save_file(tensors, str(path), metadata={"hmu_diag_zoo": json.dumps(entry, sort_keys=True)})
        path.chmod(0o644)  # safetensors writes 0600
        entry["sha256"] = sha256(path)
        entry["bytes"] = path.stat().st_size
        entries.append(entry)
        log(f"{family.name}/{member.name}: train {result.train_accuracy:.4f}, held-out "
            f"{result.heldout_accuracy:.4f} ({result.heldout_correct}/{result.n_heldout}), {result.seconds:.1f} s")
    command = f"python -m models_zoo.build --family {family.name}"
    manifest = {
        "format": FORMAT,
        "family": family.name,
        "description": family.description,
        "varied": list(family.varied),
        "data": _data_record(family.dataset),
        "training": PROTOCOL,
        "command": command if folder == family.default_dir else f"{command} --out {folder.parent}",
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                        "safetensors": safetensors.__version__},
        "models": entries,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    log(f"{family.name}: {len(entries)} models in {folder} ({time.perf_counter() - start:.0f} s)")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models_zoo.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--family", action="append", metavar="NAME", help="family to build (repeatable)")
    which.add_argument("--all", action="store_true", help="build every family")
    which.add_argument("--list", action="store_true", help="list the families and exit")
    parser.add_argument("--out", type=Path, help="parent folder; a family goes to OUT/<family> "
                                                 "(default: models_zoo/, models_zoo/digits/ or .cache/zoo/)")
    parser.add_argument("--jobs", type=int, default=1, help="models trained in parallel (one thread each)")
    args = parser.parse_args(argv)
    if args.list:
        for f in FAMILIES.values():
            print(f"{f.name:20s} {f.dataset:8s} {len(f.members)} models -> {f.root}/{f.name}"
                  f"{'' if f.committed else '  (not committed)'}\n    {f.description}")
        return 0
    try:
        families = list(FAMILIES.values()) if args.all else [get_family(n) for n in args.family]
        for family in families:
            build_family(family, args.out / family.name if args.out else None, jobs=args.jobs)
    except HmuDiagError as exc:
        print(f"models_zoo.build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
