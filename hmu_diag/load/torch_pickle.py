"""``torch.save`` checkpoints (``.pt/.pth/.bin/.ckpt``, zip or legacy format) and raw pickles.

Safe by default: ``torch.load(path, weights_only=True, map_location="cpu", mmap=True)`` (``mmap`` only for the
zip format, where tensors are then paged in on access instead of read up front). A file that needs code to load
(a global outside torch's weights-only allowlist, e.g. a pickled model class or ``builtins.exec``) raises
:class:`~hmu_diag.errors.UnsafePickleError` naming the global. ``trust_pickle`` opts in:

* ``"stubs"`` (CLI ``--stub-pickle``; torch checkpoints): still torch's weights-only unpickler, but each refused
  global is allowed as an inert placeholder class of that name (its arguments and state are stored, nothing of the
  original runs; plain builtin containers and numbers - list, dict, int, ... - are allowed as themselves), and the
  load is repeated until it succeeds.  Typical use: a Lightning checkpoint whose ``hyper_parameters`` are OmegaConf
  objects, whose ``state_dict`` then loads intact.  The placeholders are named in a warning;
* ``True``: ``weights_only=False`` (raw pickles with :func:`pickle.load`) after a loud ``warnings.warn``: that
  executes whatever code the file carries.
"""
from __future__ import annotations

import builtins
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hmu_diag.errors import CheckpointError, OptionError, UnsafePickleError
from hmu_diag.load.module import records_from_object
from hmu_diag.load.records import TensorRecord
from hmu_diag.load.safety import checkpoint_error, refuse_raw_pickle, refused_global


_MAX_PLACEHOLDERS = 64                 # distinct refused globals a "stubs" load replaces before giving up
_PLAIN_BUILTINS = frozenset({"builtins.list", "builtins.dict", "builtins.tuple", "builtins.set", "builtins.frozenset",
                             "builtins.int", "builtins.float", "builtins.complex", "builtins.str", "builtins.bytes",
                             "builtins.bool"})


class Placeholder:
    """An inert stand-in for an object whose class needs code to load (``trust_pickle="stubs"``): it keeps the
    constructor arguments and the pickled state and does nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _load_with_placeholders(path: Path, fmt: str, first: UnsafePickleError) -> Any:
    """torch's weights-only load with every refused global allowed as a :class:`Placeholder` (module docstring)."""
    allowed: list = []
    names: list[str] = []
    while len(names) < _MAX_PLACEHOLDERS:
        try:
            with torch.serialization.safe_globals(allowed):
                obj = _torch_load(path, fmt, weights_only=True)
        except pickle.UnpicklingError as exc:
            name = refused_global(exc)
            if name is None or name in names:
                raise checkpoint_error(path, exc) from None
            names.append(name)
            module, _, attr = name.rpartition(".")
            allowed.append(getattr(builtins, attr) if name in _PLAIN_BUILTINS
                           else (type(attr, (Placeholder,), {"__module__": f"hmu_diag.placeholder.{module}"}), name))
            continue
        except Exception as exc:  # noqa: BLE001 - as in _load: any failure is a one-line checkpoint error
            raise checkpoint_error(path, exc) from None
        stubbed = [n for n in names if n not in _PLAIN_BUILTINS]
        warnings.warn(f"{path}: trust_pickle='stubs': {len(stubbed)} class(es) that need code replaced by inert "
                      f"placeholders ({', '.join(stubbed[:6])}{', ...' if len(stubbed) > 6 else ''}); nothing ran",
                      UserWarning, stacklevel=4)
        return obj
    raise first


def load_object(path: Path, fmt: str, *, trust_pickle: bool | str = False) -> Any:
    """Unpickle the checkpoint at ``path`` (format ``fmt`` from :func:`~hmu_diag.load.safety.sniff_format`).

    The safe load is always tried first; ``trust_pickle`` (False, "stubs" or True: module docstring) only matters for
    a file it refuses.
    """
    try:
        return _load(path, fmt, safe=True)
    except UnsafePickleError as refused:
        if not trust_pickle or (trust_pickle == "stubs" and fmt == "pickle"):
            raise
        if trust_pickle == "stubs":
            return _load_with_placeholders(path, fmt, refused)
        if trust_pickle is not True:
            raise OptionError(f"trust_pickle={trust_pickle!r}: choose False, 'stubs' or True") from None
    warnings.warn(f"{path}: trust_pickle=True: unpickling with weights_only=False, which RUNS any code the "
                  "file contains", UserWarning, stacklevel=3)
    return _load(path, fmt, safe=False)


def _torch_load(path: Path, fmt: str, *, weights_only: bool) -> Any:
    """``torch.load`` on the CPU, memory-mapped for the zip format."""
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=fmt == "torch-zip")


def _load(path: Path, fmt: str, *, safe: bool) -> Any:
    try:
        if fmt == "pickle":
            if safe:
                refuse_raw_pickle(path)
            with path.open("rb") as fh:
                return pickle.load(fh)  # noqa: S301 - import-free (cannot run code) unless trusted
        return _torch_load(path, fmt, weights_only=safe)
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
