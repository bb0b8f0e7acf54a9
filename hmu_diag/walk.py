"""Walking stage: named tensors -> the matrices whose eigenvalues are analysed (:class:`LayerMatrix`).

Every input tensor gives at least one LayerMatrix: an analysable one (``matrices`` set) or a skip record
(``matrices=None``, ``skip_reason`` says why). Nothing is dropped silently. ``module_type`` (the owning
module's class, known for nn.Module and TorchScript sources) decides first; without it (state dicts,
safetensors) the kind is inferred from the name and the shape, so the same network gives the same ``layer``
names and views from every source.

Rules, applied in this order (first match wins):

==  =================================================  ===================================================  ==========
#   tensor                                             matrix (``matrices`` is a (B, rows, cols) batch)      kind
==  =================================================  ===================================================  ==========
0   the loader's ``skip_reason`` (a part of a weight-  skip with that reason (the effective weight comes     other
    or spectral-normalised weight)                     as its own record, :mod:`hmu_diag.load.reparam`)
1   0-D                                                skip "scalar"                                         other
2   8- or 4-bit float / bool / integer / complex       skip "quantised float dtype ..." / "bool dtype" /     other
    dtype                                              ...; fp8/fp4 weights are stored with separate (often
                                                       per-block) scales, so their raw codes are not the
                                                       layer's matrix.  (torch quantised tensors - qint8,
                                                       quint8, per tensor or per channel - carry their
                                                       scales: they are dequantised and walked by the rules
                                                       below, their view saying "dequantised ...")
3   registered buffer (``is_buffer``)                  skip "buffer"                                         other
4   owner is a norm layer (``*Norm*`` module type)      skip "normalisation layer"                            other
5   1-D (biases, PReLU/scale vectors, norm weights)     skip "1-D tensor"                                     other
6   NaN or Inf anywhere; a meta tensor                 skip "contains NaN/Inf" / "meta tensor (no data)"    other
7   RNN ``weight_ih_l<k>[_reverse]``, ``weight_hh_*``   rows split per gate: LSTM i,f,g,o; GRU r,z,n (torch   lstm/gru/
    (also cells: ``weight_ih``, ``weight_hh``)          row order); plain RNN not split. Gates from           rnn
                                                       module_type, else from the matching ``weight_hh``
                                                       shape (rows/cols = 4, 3, 1); ``weight_hr_*`` as is
8   ``in_proj_weight`` (MultiheadAttention, (3E, E))    rows split in thirds -> q, k, v                       attention
    ``{q,k,v}_proj_weight`` (MHA with kdim/vdim)        as is, part q/k/v                                     attention
9   fused QKV: owner named ``c_attn`` (GPT-2 HF         split in thirds along the dim that is 3x the other:   attention
    Conv1D, (E, 3E)) or ``qkv``/``qkv_proj``/``wqkv``/  columns for (E, 3E), rows for (3E, E) -> q, k, v
    ``to_qkv`` ((3E, E) Linear)
10  Embedding/EmbeddingBag, or (no known type) owner/   as is; leading singleton dims squeezed              embedding
    name ``*embed*``, ``wte``, ``wpe``                  (ViT ``pos_embed`` (1, T, D) -> T x D)
11  Conv1d/2d/3d (module type, or 3-/4-/5-D tensor      conv="flat": out x (in*k...), one matrix;             conv1d/
    without a known non-conv type); ConvTranspose      conv="slices": one out x in matrix per kernel         conv2d/
    likewise (its stored (in, out, k...) order)         position, their spectra pooled (B = k...)             conv3d
12  any other 2-D (Linear, HF Conv1D (in, out), ...)    as is                                                 linear
13  anything else (> 5-D, Bilinear (out, in1, in2))    dim0 x (product of the rest)                          other
14  any matrix above with B*min(rows, cols) <           skip "fewer than {min_evals} eigenvalues (n)"         (kept)
    ``min_evals`` eigenvalues (applied per split part)
==  =================================================  ===================================================  ==========

Notes:

* ``conv="slices"`` is WeightWatcher's pooled per-kernel-position ESD (``pool=True``; its ``get_ESD`` gives
  exactly these eigenvalues) but WITHOUT the ``conv2d_norm`` rescaling of W by sqrt(0.5) that its
  ``analyze()`` applies: eigenvalues here are the squared singular values of the stored weights. The
  power-law exponent alpha is scale-free and unaffected; WeightWatcher's lambda_max is 0.5 x ours and its
  log_norm / log_spectral_norm are ours + log10(0.5) = ours - 0.301 (checked in tests/test_walk.py)
  [weightwatcher.md §2.1, htsr_literature.md §4.5].
* Tied weights (an LM head sharing the token embedding, ``lm_head.weight is wte.weight``): a tensor with the same
  storage (the same live storage object, not just an address a freed tensor of a streamed file may have left),
  offset, shape, strides and dtype as an earlier one is the same matrix; it is analysed once, at its first name, and
  every later name is a skip record "tied to <first name> (the same tensor)", so the matrix enters model summaries
  at most once (with the first name's kind).  Files that store a tied tensor once (safetensors ``save_model``) have
  nothing to detect.
* GPT-NeoX/Falcon ``query_key_value`` is NOT split: its rows interleave q, k, v per head, so thirds of the
  rows would not be q, k, v; it is analysed whole as a linear layer.
* An LSTM with ``proj_size`` in a bare state dict has weight_hh rows/cols not in {1, 3, 4}; it is then not
  split (kind rnn). With a module type the split is always by gate.
* Layer names: the parameter name without ``.weight`` (or a trailing ``_weight``), plus ``:part`` for splits:
  ``attn.in_proj:q``, ``rnn.weight_ih_l0:i``, ``h.0.attn.c_attn:v``.
* Matrices keep the source dtype and are views of the source tensor (no copy) except conv="slices", a
  permuted copy; the spectrum stage casts.
"""
from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from hmu_diag.choices import CONV_MODES
from hmu_diag.errors import OptionError
from hmu_diag.load.records import TensorRecord

GATES = {"lstm": "ifgo", "gru": "rzn", "rnn": ""}
RNN_TYPES = {"LSTM": "lstm", "LSTMCell": "lstm", "GRU": "gru", "GRUCell": "gru", "RNN": "rnn", "RNNCell": "rnn"}
GATES_FROM_RATIO = {4: "lstm", 3: "gru", 1: "rnn"}
EMBEDDING_TYPES = frozenset({"Embedding", "EmbeddingBag"})
CONV_TYPES = {f"{prefix}{d}d": f"conv{d}d" for d in (1, 2, 3)
              for prefix in ("Conv", "LazyConv", "ConvTranspose", "LazyConvTranspose")}
#: HF ``Conv1D`` is GPT-2's (in, out) linear layer, not a convolution
LINEAR_TYPES = frozenset({"Linear", "LazyLinear", "NonDynamicallyQuantizableLinear", "Conv1D"})
#: module types with their own rule; any other type (None, a custom class) gets the name/shape heuristics
TYPED = frozenset(RNN_TYPES) | frozenset(CONV_TYPES) | EMBEDDING_TYPES | LINEAR_TYPES | {"MultiheadAttention",
                                                                                         "Bilinear"}

_RNN_WEIGHT = re.compile(r"^weight_(?P<which>ih|hh|hr)(?P<suffix>(?:_l\d+)?(?:_reverse)?)$")
_MHA_PART = re.compile(r"^(?P<part>[qkv])_proj_weight$")
_FUSED_QKV_OWNER = re.compile(r"^(c_attn|qkv|qkv_proj|wqkv|w_qkv|to_qkv)$", re.IGNORECASE)
_EMBED_NAME = re.compile(r"(embed|^wte$|^wpe$)", re.IGNORECASE)


@dataclass(repr=False)
class LayerMatrix:
    """One analysed matrix (or a skip record): see the module docstring for the rules."""

    layer: str
    kind: str
    part: str
    param: str
    shape: tuple[int, ...]
    view: str
    matrices: torch.Tensor | None
    skip_reason: str | None

    def __repr__(self) -> str:
        status = f"skipped: {self.skip_reason}" if self.skip_reason else self.view
        return f"LayerMatrix({self.layer!r}, kind={self.kind!r}, shape={self.shape}, {status})"


def layer_name(param: str) -> str:
    """``fc.weight`` -> ``fc``; ``attn.in_proj_weight`` -> ``attn.in_proj``; anything else unchanged."""
    if param.endswith(".weight"):
        return param[: -len(".weight")]
    if param.endswith("_weight") and not param.endswith("._weight"):
        return param[: -len("_weight")]
    return param


def _split_name(name: str) -> tuple[str, str]:
    owner, _, leaf = name.rpartition(".")
    return owner, leaf


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def _skip(record: TensorRecord, reason: str, kind: str = "other", part: str = "", layer: str = "") -> LayerMatrix:
    shape = tuple(record.tensor.shape)
    return LayerMatrix(layer or layer_name(record.name), kind, part, record.name, shape, _dims(shape), None, reason)


def _early_skip(record: TensorRecord) -> str | None:
    """Rules 0-6: the reason this tensor is not a weight matrix, or None."""
    t = record.tensor
    if record.skip_reason is not None:
        return record.skip_reason
    if t.ndim == 0:
        return "scalar"
    if t.is_floating_point() and t.dtype.itemsize == 1:
        return (f"quantised float dtype ({t.dtype}): its scales are stored separately; "
                "dequantise the checkpoint first")
    if t.dtype == torch.bool:
        return "bool dtype"
    if t.is_complex():
        return f"complex dtype ({t.dtype})"
    if not t.is_floating_point():
        return f"integer dtype ({t.dtype})"
    if record.is_buffer:
        return "buffer"
    if record.module_type and "Norm" in record.module_type:
        return "normalisation layer"
    if t.ndim == 1:
        return "1-D tensor"
    if t.is_meta:
        return "meta tensor (no data)"
    if _has_nonfinite(t):
        return "contains NaN/Inf"
    return None


#: entries summed at a time by the finite check (:func:`_has_nonfinite`)
_FINITE_CHUNK = 1 << 22


def _has_nonfinite(t: torch.Tensor) -> bool:
    """True if any entry is NaN or +-Inf. A sum is finite if every entry is (NaN and Inf propagate); a sum that
    overflows is settled by the exact elementwise check, so the answer is always exact.  The sum runs in the
    tensor's own dtype (no converted copy) over 4M-entry chunks, and no full-size bool mask is allocated for the
    common all-finite case."""
    t = t.detach()
    chunks = (t,) if t.numel() <= _FINITE_CHUNK else t.reshape(-1).split(_FINITE_CHUNK)
    if all(math.isfinite(c.sum().item()) for c in chunks):
        return False
    return not bool(torch.isfinite(t).all())


# A "part" is (part name, (B, rows, cols) view, readable view).
Part = tuple[str, torch.Tensor, str]


def _whole(w: torch.Tensor, label: str) -> list[Part]:
    return [("", w.unsqueeze(0), f"{w.shape[0]} x {w.shape[1]} ({label})")]


def _split(w: torch.Tensor, names: str, dim: int, label: str) -> list[Part]:
    chunks = w.chunk(len(names), dim=dim)
    return [(p, c.unsqueeze(0), f"{c.shape[0]} x {c.shape[1]} ({label} {p})") for p, c in zip(names, chunks)]


def _conv_parts(w: torch.Tensor, conv: str, transposed: bool) -> list[Part]:
    rows, cols = ("in", "out") if transposed else ("out", "in")
    k = "*".join(("k",) if w.ndim == 3 else ("kh", "kw") if w.ndim == 4 else ("kd", "kh", "kw"))
    if conv == "flat":
        flat = w.reshape(w.shape[0], -1)
        return [("", flat.unsqueeze(0), f"{flat.shape[0]} x {flat.shape[1]} ({rows} x {cols}*{k})")]
    slices = w.permute(*range(2, w.ndim), 0, 1).reshape(-1, w.shape[0], w.shape[1])
    return [("", slices, f"{slices.shape[0]} slices of {w.shape[0]} x {w.shape[1]} ({rows} x {cols})")]


def _parts(record: TensorRecord, conv: str, rnn_hint: str | None) -> tuple[str, list[Part]]:
    """Rules 7-13 for an analysable tensor (ndim >= 2): its kind and the matrices it contributes.

    Name/shape heuristics apply only when the module type is unknown (None or a custom class).
    """
    w, mt = record.tensor, record.module_type
    owner, leaf = _split_name(record.name)
    owner_leaf = owner.rpartition(".")[2]
    untyped = mt not in TYPED
    rnn = _RNN_WEIGHT.match(leaf)
    if rnn and w.ndim == 2 and (mt in RNN_TYPES or untyped):
        kind = RNN_TYPES.get(mt or "") or rnn_hint or "rnn"
        if rnn["which"] == "hr":
            return kind, _whole(w, "projection")
        if kind == "rnn":
            return kind, _whole(w, "as stored")
        return kind, _split(w, GATES[kind], 0, "gate")
    if w.ndim == 2 and (mt == "MultiheadAttention" or untyped):
        if leaf == "in_proj_weight" and w.shape[0] == 3 * w.shape[1]:
            return "attention", _split(w, "qkv", 0, "in_proj")
        part = _MHA_PART.match(leaf)
        if part:
            return "attention", [(part["part"], w.unsqueeze(0), f"{w.shape[0]} x {w.shape[1]} (proj)")]
    if w.ndim == 2 and leaf == "weight" and _FUSED_QKV_OWNER.match(owner_leaf) and (mt in LINEAR_TYPES or untyped):
        if w.shape[1] == 3 * w.shape[0]:
            return "attention", _split(w, "qkv", 1, "in x out, fused")
        if w.shape[0] == 3 * w.shape[1]:
            return "attention", _split(w, "qkv", 0, "out x in, fused")
    if mt in EMBEDDING_TYPES or (untyped and _EMBED_NAME.search(owner_leaf if leaf == "weight" else leaf)):
        squeezed = w
        while squeezed.ndim > 2 and squeezed.shape[0] == 1:
            squeezed = squeezed[0]
        if squeezed.ndim == 2:
            return "embedding", _whole(squeezed, "tokens x dim")
    if w.ndim in (3, 4, 5) and (mt in CONV_TYPES or untyped):
        return f"conv{w.ndim - 2}d", _conv_parts(w, conv, transposed="Transpose" in (mt or ""))
    if w.ndim == 2:
        return "linear", _whole(w, "as stored")
    flat = w.reshape(w.shape[0], -1)
    return "other", [("", flat.unsqueeze(0), f"{flat.shape[0]} x {flat.shape[1]} (dim0 x rest)")]


def _layer_matrices(record: TensorRecord, conv: str, min_evals: int, rnn_hint: str | None) -> Iterator[LayerMatrix]:
    quantised = None
    if record.tensor.is_quantized:                 # scale and zero point live in the tensor: its exact float values
        quantised = str(record.tensor.dtype).removeprefix("torch.")
        record = replace(record, tensor=record.tensor.dequantize())
    try:
        reason = _early_skip(record)
        if reason is None:
            kind, parts = _parts(record, conv, rnn_hint)
    except (RuntimeError, TypeError) as exc:       # e.g. a tensor type torch has no kernel for: reported, not raised
        reason = f"cannot be read as a matrix ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if reason is not None:
        yield _skip(record, reason)
        return
    base = layer_name(record.name)
    shape = tuple(record.tensor.shape)
    if quantised is not None:
        parts = [(part, mats, f"dequantised {quantised}, {view}") for part, mats, view in parts]
    for part, mats, view in parts:
        layer = f"{base}:{part}" if part and len(parts) > 1 else base
        n_evals = mats.shape[0] * min(mats.shape[1], mats.shape[2])
        if n_evals < min_evals:
            yield _skip(record, f"fewer than {min_evals} eigenvalues ({n_evals})", kind, part, layer)
        else:
            yield LayerMatrix(layer, kind, part, record.name, shape, view, mats, None)


def _rnn_key(record: TensorRecord) -> tuple[str, str, str] | None:
    """(owner, layer suffix, ih|hh|hr) for a bare-state-dict RNN weight, else None."""
    if record.module_type in TYPED or record.tensor.ndim != 2:
        return None
    owner, leaf = _split_name(record.name)
    match = _RNN_WEIGHT.match(leaf)
    return (owner, match["suffix"], match["which"]) if match else None


class _TiedTensors:
    """The first name of every matrix seen so far, by storage and view (module docstring: tied weights).

    Holds weak references only: a storage freed by a streaming loader is forgotten, so a later tensor that happens to
    get its address is not mistaken for it, and no tensor is kept alive."""

    def __init__(self) -> None:
        self._seen: dict[tuple, tuple[weakref.ref, str]] = {}

    def first_name(self, record: TensorRecord) -> str | None:
        """The name of the earlier record whose tensor is this one, or None (and this one is remembered)."""
        t = record.tensor
        if t.is_meta or t.layout != torch.strided or t.ndim < 2 or t.numel() == 0:
            return None
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)
        seen = self._seen.get(key)
        if seen is not None and seen[0]() is storage:
            return seen[1]
        self._seen[key] = (weakref.ref(storage), record.name)
        return None


def walk(records: Iterable[TensorRecord], *, conv: str = "flat", min_evals: int = 10) -> Iterator[LayerMatrix]:
    """Turn named tensors into LayerMatrix records (analysable or skipped), following the rules table.

    ``conv``: "flat" (out x in*k..., one matrix) or "slices" (per-kernel-position matrices, pooled ESD).
    ``min_evals``: matrices with fewer eigenvalues (B * min(rows, cols)) become skip records.

    In a bare state dict, an RNN ``weight_ih`` is held back until the ``weight_hh`` of the same layer has been
    seen (its rows/cols ratio gives the gate count); both are then emitted in their original order.
    """
    if conv not in CONV_MODES:
        raise OptionError(f"conv={conv!r}: expected one of {', '.join(CONV_MODES)}")
    if not isinstance(min_evals, int) or min_evals < 1:
        raise OptionError(f"min_evals={min_evals!r}: expected a positive integer")
    hints: dict[tuple[str, str], str | None] = {}
    pending: dict[tuple[str, str], TensorRecord] = {}
    ties = _TiedTensors()
    for record in records:
        if record.tensor.layout != torch.strided and not record.tensor.is_quantized:
            record = replace(record, tensor=record.tensor.to_dense())      # sparse (pruned) weights: analysed dense
        tied_to = ties.first_name(record)
        if tied_to is not None:
            yield _skip(record, f"tied to {tied_to} (the same tensor)")
            continue
        key = _rnn_key(record)
        if key is None:
            yield from _layer_matrices(record, conv, min_evals, None)
            continue
        layer_key = key[:2]
        if key[2] == "hh":
            rows, cols = record.tensor.shape
            hints[layer_key] = GATES_FROM_RATIO.get(rows // cols) if cols and rows % cols == 0 else None
            held = pending.pop(layer_key, None)
            if held is not None:
                yield from _layer_matrices(held, conv, min_evals, hints[layer_key])
        elif key[2] == "ih" and layer_key not in hints:
            pending[layer_key] = record
            continue
        yield from _layer_matrices(record, conv, min_evals, hints.get(layer_key))
    for held in pending.values():
        yield from _layer_matrices(held, conv, min_evals, None)
