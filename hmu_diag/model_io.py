"""Build a runnable model for the Jacobian/Hessian analyses, and view it functionally.

:func:`load_model` accepts

* ``"package.module:factory"`` (or ``"path/to/file.py:factory"``): the module is imported (the current directory is
  searched too, as ``python -m`` does) and ``factory()`` is called; with ``checkpoint`` the weights are read through
  :func:`hmu_diag.load.iter_tensors` (any format it knows, ``module.``/``_orig_mod.`` prefixes stripped, never an
  unsafe unpickle) and loaded with ``load_state_dict(strict=True)``;
* a TorchScript archive path: ``torch.jit.load(map_location="cpu")``.

The model is returned in ``eval()`` mode.  The helpers below let the spectra code call a model at another dtype or
device without mutating it: :func:`functional_state` gives cast copies of its parameters and buffers for
``torch.func.functional_call``; TorchScript modules refuse ``functional_call`` ("The stateless API can't be used with
Jitted modules"), so :func:`cast_module` deep-copies them instead.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from hmu_diag.errors import CheckpointError, OptionError

__all__ = ["load_model", "parse_dtype", "is_torchscript", "eval_mode", "functional_state", "cast_module", "cast_tree"]


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"``/... or a torch floating dtype -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    out = getattr(torch, str(dtype), None)
    if not isinstance(out, torch.dtype) or not out.is_floating_point:
        raise OptionError(f"dtype={dtype!r}: expected a floating dtype such as 'float32' or 'float64'")
    return out


def is_torchscript(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode (BatchNorm uses running stats, Dropout is off) and restore the flags after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _cast(t: torch.Tensor, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    return t.detach().to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)


def cast_tree(obj: object, dtype: torch.dtype, device: str | torch.device) -> object:
    """Floating tensors in a (nested) tuple/list/dict cast to ``dtype`` and moved to ``device``; others only moved."""
    if isinstance(obj, torch.Tensor):
        return _cast(obj, dtype, device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(cast_tree(o, dtype, device) for o in obj)
    if isinstance(obj, dict):
        return {k: cast_tree(v, dtype, device) for k, v in obj.items()}
    return obj


def functional_state(model: nn.Module, dtype: torch.dtype, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Detached copies of all parameters and buffers (floating ones cast to ``dtype``) on ``device``, by name."""
    state = {n: _cast(p, dtype, device) for n, p in model.named_parameters()}
    state.update({n: _cast(b, dtype, device) for n, b in model.named_buffers()})
    return state


def cast_module(model: nn.Module, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    """A deep copy of ``model`` with floating parameters/buffers in ``dtype`` on ``device`` (eval mode).

    Copied under ``no_grad``: a ScriptModule's deepcopy otherwise clones parameters into non-leaf tensors."""
    with torch.no_grad():
        return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _import_factory(spec: str) -> object:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise OptionError(f"--model {spec!r}: expected 'package.module:factory', 'file.py:factory' "
                          "or a TorchScript archive path")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise OptionError(f"--model {spec!r}: {target}: no such file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        added = str(Path.cwd()) not in sys.path
        if added:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise OptionError(f"--model {spec!r}: cannot import {target} ({exc})") from None
        finally:
            if added:
                sys.path.remove(str(Path.cwd()))
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise OptionError(f"--model {spec!r}: {target} has no callable {attr!r}")
    return factory


def _load_weights(model: nn.Module, checkpoint: str | Path, trust_pickle: bool) -> None:
    from hmu_diag.load import iter_tensors

    state = {r.name: r.tensor for r in iter_tensors(checkpoint, trust_pickle=trust_pickle)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: does not match the model ({len(missing)} missing keys, e.g. "
                              f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{checkpoint}: {len(bad)} shape mismatches, e.g. {k}: checkpoint "
                              f"{tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True)


def load_model(spec: str, checkpoint: str | Path | None = None, *, trust_pickle: bool = False) -> nn.Module:
    """A model in eval mode from a factory spec (+ optional checkpoint) or a TorchScript archive (see module doc)."""
    path = Path(spec)
    if path.is_file():
        from hmu_diag.load.safety import sniff_format

        if sniff_format(path) != "torchscript":
            raise OptionError(f"--model {spec}: a weights file, not a TorchScript archive; pass the architecture as "
                              "--model package.module:factory and this file as --checkpoint")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise CheckpointError(f"{spec}: cannot load TorchScript archive ({str(exc).splitlines()[0]})") from None
        if checkpoint is not None:
            raise OptionError(f"--checkpoint {checkpoint}: a TorchScript archive carries its own weights")
        return model.eval()
    model = _import_factory(spec)()
    if not isinstance(model, nn.Module):
        raise OptionError(f"--model {spec!r}: factory returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        _load_weights(model, checkpoint, trust_pickle)
    return model.eval()
