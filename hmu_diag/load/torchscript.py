"""TorchScript archives (``torch.jit.save``): parameters and buffers of the scripted module.

``torch.jit.load`` reads the archive's restricted pickles and TorchScript code (no arbitrary Python runs).
Module types come from each submodule's ``original_name`` (the Python class name at scripting time, e.g.
``"Conv1d"``, ``"LSTMCell"``).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from hmu_diag.load.module import clean_name
from hmu_diag.load.records import TensorRecord
from hmu_diag.load.safety import checkpoint_error


def iter_torchscript(path: Path) -> Iterator[TensorRecord]:
    """Stream a TorchScript archive's state dict with module types and buffer flags."""
    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the user chose the format
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the C++ reader
        raise checkpoint_error(path, exc) from None
    owners = {name: getattr(mod, "original_name", None) for name, mod in scripted.named_modules()}
    buffers = {name for name, _ in scripted.named_buffers()}
    for name, tensor in scripted.state_dict().items():
        yield TensorRecord(clean_name(name), tensor.detach().cpu(), owners.get(name.rpartition(".")[0]),
                           name in buffers)
