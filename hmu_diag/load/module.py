"""In-memory sources: a ``torch.nn.Module`` or a (possibly nested) state dict, and the rules that find the
weights inside a loaded checkpoint object.

Finding the weights in a checkpoint object (:func:`records_from_object`):

1. an ``nn.Module`` (e.g. a trusted ``torch.save(model)``): its ``state_dict()`` (parameters and persistent
   buffers, in registration order), ``module_type`` = class name of the owning module, buffers flagged.  A tensor
   registered with ``torch.nn.utils.parametrize`` (weight norm, spectral norm, orthogonal, any custom one) is
   given as the value the module computes with in eval mode, named ``<module>.<tensor>``, right after its stored
   parts, which are records with a skip reason;
2. a mapping with one of the keys ``state_dict``, ``model_state_dict``, ``model_state``, ``model``, ``module``,
   ``net``, ``network`` (first found, in that order) whose value is a module or a mapping: recurse into it.
   A Lightning checkpoint (has ``pytorch-lightning_version``) whose ``state_dict`` keys all start with
   ``model.`` has that prefix removed, so names match the bare network;
3. otherwise the mapping itself, flattened: nested mappings/lists join their keys with ``.``.

Never weights (dropped with their whole subtree): keys ``optimizer``, ``optimizer_state``, ``optimizer_states``,
``optimizer_state_dict``, ``optim``, ``lr_schedulers``, ``scheduler``, ``scaler``, ``callbacks``, any mapping
shaped like an optimizer state dict (``state`` + ``param_groups``), and Adam/SGD moment tensors named
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``.

Names: leading ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) are stripped, repeatedly.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from hmu_diag.load.records import TensorRecord
from hmu_diag.model_io import eval_mode

WEIGHT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network")
OPTIMIZER_KEYS = frozenset({"optimizer", "optimizer_state", "optimizer_states", "optimizer_state_dict", "optim",
                            "lr_schedulers", "lr_scheduler", "scheduler", "scaler", "callbacks"})
MOMENT_NAMES = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})
_WRAPPERS = ("module.", "_orig_mod.")
_WRAPPER_PREFIX = re.compile(r"^(?:module\.|_orig_mod\.)+")


def clean_name(name: str) -> str:
    """Strip leading ``module.`` / ``_orig_mod.`` wrapper prefixes (any number, any order)."""
    return _WRAPPER_PREFIX.sub("", name) if name.startswith(_WRAPPERS) else name


_PARAMETRIZED_PART = re.compile(r"^(?:(?P<owner>.*)\.)?parametrizations\.(?P<tensor>[^.]+)\.")


def _computed(module: torch.nn.Module, tensor: str) -> torch.Tensor:
    """The value of a parametrised tensor as the module computes it in eval mode (no power-iteration step), on the
    CPU; the training flags are restored."""
    with eval_mode(module), torch.no_grad():
        return getattr(module, tensor).detach().cpu()


def records_from_module(model: torch.nn.Module) -> Iterator[TensorRecord]:
    """Stream an ``nn.Module``'s state dict as CPU TensorRecords with the owning module's class name (parametrised
    tensors: module docstring, rule 1)."""
    modules = dict(model.named_modules())
    buffers = {name for name, _ in model.named_buffers()}
    items = list(model.state_dict(keep_vars=False).items())

    def parametrised(key: str) -> re.Match | None:
        match = _PARAMETRIZED_PART.match(key)
        return match if match and torch.nn.utils.parametrize.is_parametrized(modules.get(match["owner"] or "")) \
            else None

    matches = [parametrised(key) for key, _ in items]
    last_part = {(m["owner"] or "", m["tensor"]): i for i, m in enumerate(matches) if m}   # -> its last stored part
    for i, ((key, value), match) in enumerate(zip(items, matches)):
        owner = (match["owner"] or "") if match else key.rpartition(".")[0]
        module_type = type(modules[owner]).__name__ if owner in modules else None
        skip = None
        if match:
            target = f"{owner}.{match['tensor']}" if owner else match["tensor"]
            kinds = ", ".join(type(p).__name__.lstrip("_") for p in modules[owner].parametrizations[match["tensor"]])
            skip = f"part of {clean_name(target)} (parametrised: {kinds}); analysed as the effective weight"
        # values that are not tensors: a quantised layer's packed (weight, bias) tuple is flattened, a dtype is not data
        for name, tensor in _flatten(value, key):
            yield TensorRecord(clean_name(name), tensor.detach().cpu(), module_type, key in buffers, skip)
        if match and last_part[(owner, match["tensor"])] == i:
            yield TensorRecord(clean_name(target), _computed(modules[owner], match["tensor"]), module_type)


def _is_optimizer_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "state" in obj and "param_groups" in obj


def _flatten(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        if _is_optimizer_state(obj):
            return
        for key, value in obj.items():
            key = str(key)
            if key in OPTIMIZER_KEYS or key in MOMENT_NAMES:
                continue
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, torch.Tensor):           # the common case, without a nested generator
                yield name, value
            else:
                yield from _flatten(value, name)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _flatten(value, f"{prefix}.{i}" if prefix else str(i))


def _is_lightning(obj: Mapping) -> bool:
    return "pytorch-lightning_version" in obj or "lightning_version" in obj


def _strip_common(names: list[str], prefix: str) -> bool:
    return bool(names) and all(n.startswith(prefix) for n in names)


def records_from_object(obj: Any) -> Iterator[TensorRecord]:
    """Stream the weights found in a loaded checkpoint object (rules in the module docstring)."""
    if isinstance(obj, torch.nn.Module):
        yield from records_from_module(obj)
        return
    if isinstance(obj, Mapping):
        for key in WEIGHT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                yield from records_from_module(inner)
                return
            pairs = list(_flatten(inner, "")) if isinstance(inner, Mapping) else []
            if pairs:
                if _is_lightning(obj) and _strip_common([n for n, _ in pairs], "model."):
                    pairs = [(n[len("model."):], t) for n, t in pairs]
                yield from _records(pairs)
                return
    yield from _records(_flatten(obj, ""))


def _records(pairs: Any) -> Iterator[TensorRecord]:
    for name, tensor in pairs:
        yield TensorRecord(clean_name(name), tensor.detach().cpu(), None, False)
