"""Loading stage: any checkpoint -> a stream of named CPU tensors (:class:`TensorRecord`).

Sources accepted by :func:`iter_tensors` / :func:`list_models` (module that reads them in brackets):

* ``torch.nn.Module``: ``state_dict()`` + owning module class names, buffers flagged (``module``);
* a dict / nested dict: the weights found inside (``state_dict``, ``model_state``, ...), optimizer state
  never read (``module``);
* ``.pt .pth .bin .ckpt`` (torch.save, zip or legacy):
  ``torch.load(weights_only=True, map_location="cpu", mmap=True)`` (``torch_pickle``);
* a raw pickle: refused if it imports anything, unless ``trust_pickle=True`` (``torch_pickle``);
* ``.safetensors``, single or sharded (index json or ``-0000i-of-0000n`` set): ``safe_open``, one tensor at a
  time (``safetensors_io``);
* a TorchScript archive: ``torch.jit.load`` + ``original_name`` module types (``torchscript``);
* a directory: every checkpoint in it, a shard set counting once, via :func:`list_models` (``discover``).

File formats are recognised from their bytes (:func:`hmu_diag.load.safety.sniff_format`), not their
extensions, and without executing anything. Bad files raise a one-line
:class:`~hmu_diag.errors.CheckpointError`; pickles that need code raise
:class:`~hmu_diag.errors.UnsafePickleError` naming the global and the ``trust_pickle`` opt-in.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from hmu_diag.errors import CheckpointError
from hmu_diag.load.discover import discover
from hmu_diag.load.module import records_from_object
from hmu_diag.load.records import DuplicateCheckpoint, ModelRef, TensorRecord
from hmu_diag.load.safetensors_io import ShardedCheckpoint, iter_safetensors, iter_sharded, sharded_from_index
from hmu_diag.load.safety import sniff_format
from hmu_diag.load.torch_pickle import iter_pickle
from hmu_diag.load.torchscript import iter_torchscript

__all__ = ["TensorRecord", "ModelRef", "ShardedCheckpoint", "list_models", "iter_tensors"]


def list_models(source: object, *, trust_pickle: bool = False) -> list[ModelRef]:
    """The models in ``source``: one per checkpoint (a sharded set is one) for a directory, else ``[one]``.

    ``trust_pickle`` is accepted for symmetry with :func:`iter_tensors`; listing never unpickles.
    """
    del trust_pickle
    if isinstance(source, ModelRef):
        return [source]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return discover(path)
        if path.name.endswith(".index.json"):
            return [ModelRef(path.name.removesuffix(".index.json"), sharded_from_index(path))]
        sniff_format(path)
        return [ModelRef(path.name, path)]
    if isinstance(source, ShardedCheckpoint):
        return [ModelRef(source.name, source)]
    if isinstance(source, (torch.nn.Module, Mapping)):
        return [ModelRef(type(source).__name__, source)]
    raise CheckpointError(f"{type(source).__name__} object: not a model source (expected a path, a directory, "
                          "an nn.Module or a state dict)")


def iter_tensors(source: object, *, trust_pickle: bool = False) -> Iterator[TensorRecord]:
    """Stream the named tensors of ONE model (a path, a sharded set, an index json, a directory holding a
    single model, an ``nn.Module``, a (nested) state dict or a :class:`ModelRef`).

    ``trust_pickle=True`` lets pickles that need code load with ``weights_only=False`` (with a warning).
    """
    if isinstance(source, ModelRef):
        source = source.source
    if isinstance(source, DuplicateCheckpoint):
        raise CheckpointError(source.why)
    if isinstance(source, ShardedCheckpoint):
        return iter_sharded(source, trust_pickle=trust_pickle)
    if isinstance(source, (torch.nn.Module, Mapping)):
        return records_from_object(source)
    if not isinstance(source, (str, os.PathLike)):
        list_models(source)  # raises the "not a model source" error
    path = Path(source)
    if path.is_dir():
        models = [m for m in discover(path) if not isinstance(m.source, DuplicateCheckpoint)]
        if len(models) > 1:
            raise CheckpointError(f"{path}: holds {len(models)} models ({', '.join(m.name for m in models[:4])}"
                                  f"{', ...' if len(models) > 4 else ''}); use list_models() and analyse each")
        return iter_tensors(models[0], trust_pickle=trust_pickle)
    if path.name.endswith(".index.json"):
        return iter_sharded(sharded_from_index(path), trust_pickle=trust_pickle)
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return iter_safetensors(path)
    if fmt == "torchscript":
        return iter_torchscript(path)
    return iter_pickle(path, fmt, trust_pickle=trust_pickle)
