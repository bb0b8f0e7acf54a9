"""``torch.save`` checkpoints (``.pt/.pth/.bin/.ckpt``, zip or legacy format) and raw pickles.

Safe by default: ``torch.load(path, weights_only=True, map_location="cpu", mmap=True)`` (``mmap`` only for the
zip format, where tensors are then paged in on access instead of read up front). A file that needs code to load
(a global outside torch's weights-only allowlist, e.g. a pickled model class or ``builtins.exec``) raises
:class:`~hmu_diag.errors.UnsafePickleError` naming the global. With ``trust_pickle=True`` the file is loaded
with ``weights_only=False`` (raw pickles with :func:`pickle.load`) after a loud ``warnings.warn``: that
executes whatever code the file carries.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hmu_diag.errors import CheckpointError, UnsafePickleError
from hmu_diag.load.module import records_from_object
from hmu_diag.load.records import TensorRecord
from hmu_diag.load.safety import checkpoint_error, refuse_raw_pickle


def load_object(path: Path, fmt: str, *, trust_pickle: bool = False) -> Any:
    """Unpickle the checkpoint at ``path`` (format ``fmt`` from :func:`~hmu_diag.load.safety.sniff_format`).

    The safe load is always tried first; ``trust_pickle`` only matters for a file it refuses.
    """
    try:
        return _load(path, fmt, safe=True)
    except UnsafePickleError:
        if not trust_pickle:
            raise
    warnings.warn(f"{path}: trust_pickle=True: unpickling with weights_only=False, which RUNS any code the "
                  "file contains", UserWarning, stacklevel=3)
    return _load(path, fmt, safe=False)


def _load(path: Path, fmt: str, *, safe: bool) -> Any:
    try:
        if fmt == "pickle":
            if safe:
                refuse_raw_pickle(path)
            with path.open("rb") as fh:
                return pickle.load(fh)  # noqa: S301 - import-free (cannot run code) unless trusted
        return torch.load(path, map_location="cpu", weights_only=safe, mmap=fmt == "torch-zip")
    except CheckpointError:
        raise
    except Exception as exc:  # torch/pickle raise RuntimeError, UnpicklingError, EOFError, ValueError, ...
        raise checkpoint_error(path, exc) from None


def iter_pickle(path: Path, fmt: str, *, trust_pickle: bool = False) -> Iterator[TensorRecord]:
    """Stream the weights of a torch.save / pickle checkpoint (nested containers resolved by
    :func:`~hmu_diag.load.module.records_from_object`)."""
    obj = load_object(path, fmt, trust_pickle=trust_pickle)
    found = False
    for record in records_from_object(obj):
        found = True
        yield record
    if not found:
        raise CheckpointError(f"{path}: no tensors found (top-level object: {type(obj).__name__})")
