"""The two values the loading stage hands on: one named tensor, and one model to load."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorRecord:
    """One named tensor of a model.

    ``name`` is the full parameter name with ``module.`` / ``_orig_mod.`` prefixes stripped; ``tensor`` a CPU
    tensor; ``module_type`` the class name of the owning module when known (nn.Module, TorchScript), else None;
    ``is_buffer`` True for registered buffers (running stats, constant bases), which are not weights;
    ``skip_reason`` set when the loading stage already knows the tensor is not analysed itself (e.g. a part of a
    weight-normalised weight, :mod:`hmu_diag.load.reparam`).
    """

    name: str
    tensor: torch.Tensor
    module_type: str | None
    is_buffer: bool = False
    skip_reason: str | None = None

    def __repr__(self) -> str:
        return (f"TensorRecord(name={self.name!r}, shape={tuple(self.tensor.shape)}, dtype={self.tensor.dtype}, "
                f"module_type={self.module_type!r}, is_buffer={self.is_buffer})")


@dataclass(frozen=True)
class DuplicateCheckpoint:
    """A checkpoint file that holds the same weights as another one beside it and is not read (``why`` says which);
    reading it raises :class:`~hmu_diag.errors.CheckpointError` with that reason, which a folder analysis reports as
    the file's row."""

    path: object
    why: str


@dataclass(frozen=True)
class ModelRef:
    """One model to analyse: a display ``name`` and the ``source`` to pass to ``iter_tensors`` (a path, a
    :class:`~hmu_diag.load.sharded.ShardedCheckpoint`, or an in-memory object)."""

    name: str
    source: object

    def __repr__(self) -> str:
        src = f"<{type(self.source).__name__}>" if isinstance(self.source, (torch.nn.Module, dict)) else self.source
        return f"ModelRef(name={self.name!r}, source={src!r})"
