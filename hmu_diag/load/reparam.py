"""Weight reparametrisations: the effective weight a layer computes with, rebuilt from the parts a checkpoint stores.

Weight norm (``torch.nn.utils.weight_norm`` or ``parametrizations.weight_norm``):
    W = g v / ||v||, the norm over every dim but the one g keeps (torch's default ``dim=0``: g is (out, 1, ...));
    a one-element g (``dim=None``) divides by the whole norm.
    Stored parts of ``P.weight``: ``P.weight_g`` and ``P.weight_v``, or ``P.parametrizations.weight.original0`` (g)
    and ``.original1`` (v).

Spectral norm (``torch.nn.utils.spectral_norm`` or ``parametrizations.spectral_norm``):
    W = W0 / sigma, sigma = u^T W0_mat v, with W0_mat = W0 reshaped to (out, -1) and u, v the stored power-iteration
    vectors (what torch uses in eval mode).
    Stored parts: ``P.weight_orig``, ``P.weight_u``, ``P.weight_v``, or ``P.parametrizations.weight.original``,
    ``.0._u``, ``.0._v``.

Analysing a part instead (v, or the unnormalised W0) would give the wrong spectrum: weight norm rescales every row,
which changes the shape of the ESD and alpha; spectral norm rescales W, which changes lambda_max and the norms.
Each part is passed on as a record with ``skip_reason`` "part of P.weight (<name>); analysed as the effective
weight", and the effective weight as one record named ``P.weight`` as soon as its last part has arrived (parts come
in any order: a state dict and a name-sorted safetensors file order them differently).  Parts of a set that never
completes are passed on unchanged at the end, to be analysed as they are - except ``parametrizations.*`` tensors:
those of another parametrisation (orthogonal, a custom one) or of an incomplete set cannot give the effective weight
from a state dict, so they are skip records saying so (an ``nn.Module`` source gives torch's own computed weight,
:mod:`hmu_diag.load.module`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

import torch

from hmu_diag.load.records import TensorRecord

#: (reparametrisation, prefix-capturing pattern, role of the part) for every stored part
_PARTS = (
    ("weight norm", re.compile(r"(?P<prefix>.*)\.weight_g$"), "g"),
    ("weight norm", re.compile(r"(?P<prefix>.*)\.weight_v$"), "v"),
    ("weight norm", re.compile(r"(?:(?P<prefix>.*)\.)?parametrizations\.weight\.original0$"), "g"),
    ("weight norm", re.compile(r"(?:(?P<prefix>.*)\.)?parametrizations\.weight\.original1$"), "v"),
    ("spectral norm", re.compile(r"(?P<prefix>.*)\.weight_orig$"), "w0"),
    ("spectral norm", re.compile(r"(?P<prefix>.*)\.weight_u$"), "u"),
    ("spectral norm", re.compile(r"(?:(?P<prefix>.*)\.)?parametrizations\.weight\.original$"), "w0"),
    ("spectral norm", re.compile(r"(?:(?P<prefix>.*)\.)?parametrizations\.weight\.0\._u$"), "u"),
    ("spectral norm", re.compile(r"(?:(?P<prefix>.*)\.)?parametrizations\.weight\.0\._v$"), "v"),
)
_ROLES = {"weight norm": {"g", "v"}, "spectral norm": {"w0", "u", "v"}}
_UNKNOWN = ("stored part of a parametrised weight that a state dict cannot rebuild (not a complete weight-norm or "
            "spectral-norm set): analyse the nn.Module to get its effective weight")


def _parametrization_part(name: str) -> bool:
    """A tensor stored by ``torch.nn.utils.parametrize`` (``[P.]parametrizations.<tensor>.*``)."""
    return name.startswith("parametrizations.") or ".parametrizations." in name


def _part(name: str, pending: dict[tuple[str, str], dict[str, TensorRecord]]) -> tuple[str, str, str] | None:
    """(reparametrisation, prefix, role) of a stored part, or None.  ``P.weight_v`` is weight norm's v unless a
    spectral-norm set of that prefix is already pending (old-style spectral norm stores ``weight_v`` too)."""
    if ".weight_" not in name and "parametrizations.weight." not in name:      # most names: no pattern can match
        return None
    for kind, pattern, role in _PARTS:
        match = pattern.match(name)
        if match:
            prefix = match["prefix"] or ""
            if name.endswith(".weight_v") and (prefix, "spectral norm") in pending:
                return "spectral norm", prefix, "v"
            return kind, prefix, role
    return None


def _effective(kind: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The effective weight from complete parts (formulas: module docstring), in float64 when the parts are float64,
    else float32."""
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in parts.values()) else torch.float32
    if kind == "weight norm":
        g, v = parts["g"].to(dtype), parts["v"].to(dtype)
        if g.numel() == 1:
            return v * (g.reshape(()) / v.norm())
        kept = next(d for d, size in enumerate(g.shape) if size != 1)          # the dim weight norm keeps
        norm = v.transpose(0, kept).reshape(v.shape[kept], -1).norm(dim=1)
        return v * (g / norm.reshape(g.shape))
    w0, u, v = parts["w0"].to(dtype), parts["u"].to(dtype), parts["v"].to(dtype)
    sigma = torch.dot(u, w0.reshape(w0.shape[0], -1) @ v)
    return w0 / sigma


def effective_weights(records: Iterable[TensorRecord]) -> Iterator[TensorRecord]:
    """``records`` with every weight-norm or spectral-norm weight rebuilt (module docstring)."""
    pending: dict[tuple[str, str], dict[str, TensorRecord]] = {}
    for record in records:
        found = _part(record.name, pending)
        if record.skip_reason is not None or (found is None and not _parametrization_part(record.name)):
            yield record
            continue
        if found is None:
            yield replace(record, skip_reason=_UNKNOWN)
            continue
        kind, prefix, role = found
        parts = pending.setdefault((prefix, kind), {})
        parts[role] = record
        if set(parts) != _ROLES[kind]:
            continue
        del pending[(prefix, kind)]
        weight = f"{prefix}.weight" if prefix else "weight"
        for part in parts.values():
            yield replace(part, skip_reason=f"part of {weight} ({kind}); analysed as the effective weight")
        carrier = parts["v"] if kind == "weight norm" else parts["w0"]
        yield TensorRecord(weight, _effective(kind, {r: p.tensor for r, p in parts.items()}), carrier.module_type)
    for parts in pending.values():
        for part in parts.values():
            yield replace(part, skip_reason=_UNKNOWN) if _parametrization_part(part.name) else part
