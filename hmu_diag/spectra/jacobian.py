"""Input-output and per-block Jacobian spectra of a model at a set of inputs.

For one input ``x`` (a single sample; the model is called on ``x[None]``) the Jacobian is
``J(x) = d vec(f(x)) / d vec(x)`` (``d_out x d_in``), where ``f`` is the model's output (all tensor outputs
flattened and concatenated, or one of them with ``output=i``).  Its singular values ``s_i`` give the ESD
``lambda_i = s_i^2`` (eigenvalues of ``J^T J``), the Jacobian counterpart of ``W^T W`` in HT-SR fits; ``mean(s^2) = 1``
is criticality and ``s_i ~ 1`` for all ``i`` dynamical isometry (Pennington, Schoenholz & Ganguli 2017,
arXiv:1711.04735).  Spectra are pooled across inputs (``B`` inputs -> ``B * min(d_out, d_in)`` eigenvalues, like conv
slices) and kept per input.

Two ways to get the singular values, switched by size (``method="auto"``) or forced:

* ``"exact"``: the dense ``J`` from ``torch.func.jacrev`` (``d_out`` VJPs; used when ``d_out <= d_in``) or
  ``jacfwd`` (``d_in`` JVPs) and ``torch.linalg.svdvals``; chosen when ``d_out * d_in <= max_elements``;
* ``"lanczos"``: matrix-free top-``k`` eigenvalues of the smaller Gram matrix (``J^T J`` via ``vjp(jvp(v))`` or
  ``J J^T``), Lanczos with full reorthogonalisation and residual checks
  (:func:`hmu_diag.spectra.lanczos.top_eigenpairs`);
  only converged values are kept.

Per-block Jacobians ``J_l = d h_l / d h_{l-1}`` (:func:`layer_jacobian_spectra`): each block's input is recorded
with a forward hook during one forward pass over the inputs, then the block alone is differentiated at it.  For an
MLP block ``h_l = phi(W_l h_{l-1} + b_l)`` this is ``diag(phi'(W_l h_{l-1} + b_l)) W_l``.  TorchScript models go
through ``torch.autograd.functional`` (no ``functional_call``, no forward hooks, so no per-block spectra).

Inputs are differentiated one at a time on purpose: ``vmap(jacrev(f))`` over the inputs is 4x faster on MTCNN ONet
but wrong through ``nn.PReLU`` in torch 2.13 (max abs error 0.065 against ``torch.autograd.functional.jacobian``,
forward outputs identical), and raises a shape error on a bare PReLU + conv input.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, jvp, vjp

from hmu_diag.errors import OptionError
from hmu_diag.model_io import cast_module, cast_tree, eval_mode, functional_state, is_torchscript, parse_dtype
from hmu_diag.spectra.lanczos import top_eigenpairs

__all__ = ["JacobianSpectrum", "LayerJacobianSpectra", "jacobian_spectrum", "layer_jacobian_spectra"]

MAX_ELEMENTS = 2 ** 24   # dense J up to 16.8 M entries (64 MiB in float32) before switching to Lanczos


@dataclass(frozen=True)
class JacobianSpectrum:
    """Singular values of ``J(x_i)`` for each input.

    singular_values: (n_inputs, r) float64, descending per row; ``r = min(d_out, d_in)`` (exact) or ``k`` (lanczos);
    converged: same shape, False where a Lanczos value failed its residual check (exact: all True).
    ``evals`` pools the converged ``s^2`` of all inputs (ascending): the ESD the fits see.
    """
    name: str
    source: str
    kind: str
    d_in: int
    d_out: int
    method: str
    singular_values: np.ndarray = field(repr=False)
    converged: np.ndarray = field(repr=False)
    n_matvec: int
    dtype: str
    per_input: bool = False

    @property
    def n_inputs(self) -> int:
        return int(self.singular_values.shape[0])

    @property
    def evals(self) -> np.ndarray:
        return np.sort(self.singular_values[self.converged] ** 2)

    def input_evals(self, i: int) -> np.ndarray:
        """ESD ``s^2`` (ascending, converged values) of input ``i`` alone."""
        return np.sort(self.singular_values[i][self.converged[i]] ** 2)

    def to_frame(self, model: str = "model", *, per_input: bool | None = None, htmp: bool = False) -> pd.DataFrame:
        """Rows in the weights table format: the pooled spectrum, then (``per_input``) one row per input
        (``layer = "<name>[i]"``).  Extra columns: ``s_max``, ``s_min``, ``mean_s2`` (criticality: 1),
        ``n_inputs``, ``method``."""
        from hmu_diag.metrics import esd_row

        per_input = self.per_input if per_input is None else per_input
        big, small = max(self.d_in, self.d_out), min(self.d_in, self.d_out)
        parts = [(self.name, self.evals)]
        if per_input:
            parts += [(f"{self.name}[{i}]", self.input_evals(i)) for i in range(self.n_inputs)]
        rows = []
        for layer, ev in parts:
            row = {"model": model, "layer": layer, "kind": self.kind, "part": "", "param": "",
                   "shape": (self.d_out, self.d_in),
                   "view": f"{self.d_out} x {self.d_in} (out x in), {self.method}", "source": self.source}
            zero_tol = float(ev.max()) * big * float(np.finfo(self.dtype).eps) if ev.size else 0.0
            row.update(esd_row(ev, N=big, M=small, zero_tol=zero_tol, dtype=self.dtype, htmp=htmp))
            row["status"] = "ok" if row.get("fit_status", "ok") == "ok" else row["fit_status"]
            row["warning"] = ""   # WeightWatcher's alpha thresholds are calibrated on weight ESDs only
            s = np.sqrt(ev)
            row.update({"s_max": float(s.max()) if s.size else math.nan,
                        "s_min": float(s.min()) if s.size else math.nan,
                        "mean_s2": float(ev.mean()) if ev.size else math.nan,
                        "n_inputs": self.n_inputs if layer == self.name else 1, "method": self.method})
            rows.append(row)
        return pd.DataFrame(rows)


def _flatten_output(out: object, output: int | None) -> torch.Tensor:
    if output is not None:
        if not isinstance(out, (tuple, list)):
            raise OptionError(f"output={output}: the model returns a single tensor, not a tuple")
        out = out[output]
    if isinstance(out, torch.Tensor):
        return out.reshape(-1)
    if isinstance(out, (tuple, list)):
        return torch.cat([_flatten_output(o, None) for o in out])
    if isinstance(out, dict):
        return torch.cat([_flatten_output(o, None) for o in out.values()])
    raise OptionError(f"model output of type {type(out).__name__}: expected tensors")


def _per_sample(call: Callable[[torch.Tensor], object], output: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> vec(f(x[None]))``: the model on a batch of one, output flattened."""
    return lambda x: _flatten_output(call(x.unsqueeze(0)), output)


def _dense_jacobian(f: Callable, x: torch.Tensor, d_out: int, functional: bool) -> torch.Tensor:
    if not functional:
        return torch.autograd.functional.jacobian(f, x).reshape(d_out, -1)
    return (jacrev(f) if d_out <= x.numel() else jacfwd(f))(x).reshape(d_out, -1)


def _gram_matvec(f: Callable, x: torch.Tensor, d_out: int, functional: bool) -> tuple[Callable, int]:
    """Matvec of the smaller Gram matrix (``J^T J`` if d_in <= d_out else ``J J^T``) and its size."""
    shape = x.shape
    if functional:
        _, pullback = vjp(f, x)
        jv = lambda v: jvp(f, (x,), (v.view(shape),))[1]
        jtu = lambda u: pullback(u)[0].reshape(-1)
    else:
        jv = lambda v: torch.autograd.functional.jvp(f, x, v.view(shape))[1]
        jtu = lambda u: torch.autograd.functional.vjp(f, x, u)[1].reshape(-1)
    if x.numel() <= d_out:
        return (lambda v: jtu(jv(v))), x.numel()
    return (lambda u: jv(jtu(u))), d_out


def _spectra(f: Callable, xs: torch.Tensor, *, functional: bool, method: str, k: int, tol: float | None,
             max_elements: int, seed: int) -> tuple[np.ndarray, np.ndarray, str, int, int, int]:
    """Singular values of ``J_f`` at every row of ``xs`` -> (s, converged, method, d_in, d_out, n_matvec)."""
    d_in = xs[0].numel()
    with torch.no_grad():
        d_out = int(f(xs[0]).numel())
    if method == "auto":
        method = "exact" if d_in * d_out <= max_elements else "lanczos"
    if method == "exact":
        J = torch.stack([_dense_jacobian(f, x, d_out, functional) for x in xs])
        s = torch.linalg.svdvals(J).double().cpu().numpy()
        return s, np.ones(s.shape, bool), method, d_in, d_out, 0
    if method != "lanczos":
        raise OptionError(f"method={method!r}: expected 'auto', 'exact' or 'lanczos'")
    rows, conv, count = [], [], 0
    for i, x in enumerate(xs):
        matvec, n = _gram_matvec(f, x, d_out, functional)
        eig = top_eigenpairs(matvec, n, min(k, n), tol=tol, seed=seed + i, dtype=x.dtype, device=x.device)
        rows.append(np.sqrt(np.clip(eig.evals, 0.0, None)))
        conv.append(eig.converged)
        count += eig.n_matvec
    return np.stack(rows), np.stack(conv), method, d_in, d_out, count


def _sample_call(model: nn.Module, dtype: torch.dtype, device: str | torch.device) -> tuple[Callable, bool]:
    """A forward at ``dtype``/``device`` that leaves ``model`` untouched, and whether torch.func can trace it."""
    if is_torchscript(model):
        return cast_module(model, dtype, device), False
    state = functional_state(model, dtype, device)
    return (lambda x: functional_call(model, state, (x,))), True


def jacobian_spectrum(model: nn.Module, inputs: torch.Tensor, *, method: str = "auto", per_input: bool = False,
                      k: int = 20, output: int | None = None, tol: float | None = None,
                      max_elements: int = MAX_ELEMENTS, device: str | torch.device = "cpu",
                      dtype: str | torch.dtype = "float32", seed: int = 0) -> JacobianSpectrum:
    """Singular values of the input-output Jacobian at each input (rows of ``inputs``; see module docstring).

    ``method``: "auto" (exact when ``d_out * d_in <= max_elements``), "exact" or "lanczos" (top ``k`` per input,
    relative residual ``tol``: default 1e-8 float64 / 1e-3 float32).  ``output`` picks one element of a tuple output.
    ``per_input`` makes :meth:`JacobianSpectrum.to_frame` add one row per input.
    """
    tdtype = parse_dtype(dtype)
    xs = _inputs(inputs, tdtype, device)
    call, functional = _sample_call(model, tdtype, device)
    with eval_mode(model):
        s, conv, used, d_in, d_out, n_mv = _spectra(_per_sample(call, output), xs, functional=functional,
                                                     method=method, k=k, tol=tol, max_elements=max_elements,
                                                     seed=seed)
    return JacobianSpectrum(name="input->output", source="jacobian", kind="model", d_in=d_in, d_out=d_out,
                            method=used, singular_values=s, converged=conv, n_matvec=n_mv,
                            dtype=str(tdtype).removeprefix("torch."), per_input=per_input)


def _inputs(inputs: object, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.shape[0] < 1:
        raise OptionError("inputs: expected a tensor of shape (n_inputs, ...) holding at least one sample")
    if not inputs.is_floating_point():
        raise OptionError(f"inputs: dtype {inputs.dtype} is not floating; Jacobians need continuous inputs")
    return cast_tree(inputs, dtype, device)


@dataclass(frozen=True)
class LayerJacobianSpectra:
    """Per-block Jacobian spectra: ``spectra[name]`` for analysed blocks, ``skipped[name]`` = reason otherwise."""
    spectra: dict[str, JacobianSpectrum] = field(repr=False)
    skipped: dict[str, str]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.spectra)

    def __getitem__(self, name: str) -> JacobianSpectrum:
        return self.spectra[name]

    def to_frame(self, model: str = "model", *, per_input: bool = False, htmp: bool = False) -> pd.DataFrame:
        """One row per block (``source="layer_jacobian"``, plus per-input rows on request); skipped blocks get a
        row with ``status="skipped: <reason>"``."""
        frames = [s.to_frame(model, per_input=per_input, htmp=htmp) for s in self.spectra.values()]
        frames.append(pd.DataFrame([{"model": model, "layer": n, "source": "layer_jacobian",
                                     "status": f"skipped: {why}"} for n, why in self.skipped.items()]))
        return pd.concat([f for f in frames if not f.empty], ignore_index=True)


def layer_jacobian_spectra(model: nn.Module, inputs: torch.Tensor, *, layers: Sequence[str] | None = None,
                           method: str = "auto", k: int = 20, tol: float | None = None,
                           max_elements: int = MAX_ELEMENTS, device: str | torch.device = "cpu",
                           dtype: str | torch.dtype = "float32", seed: int = 0) -> LayerJacobianSpectra:
    """Spectra of ``d h_l / d h_{l-1}`` for each block (default: the top-level children, in order; or the given
    module names) at the block inputs reached by ``inputs``.  Blocks called with anything but one tensor, or never
    called, are skipped with a reason; a block called more than once is analysed at its first call."""
    if is_torchscript(model):
        raise OptionError(f"{type(model).__name__}: layer Jacobians need an nn.Module "
                          "(TorchScript modules have no forward hooks)")
    tdtype = parse_dtype(dtype)
    xs = _inputs(inputs, tdtype, device)
    modules = dict(model.named_modules())
    names = [n for n, _ in model.named_children()] if layers is None else list(layers)
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        raise OptionError(f"layers: {type(model).__name__} has no submodule {unknown[0]!r} "
                          f"(top-level: {[n for n, _ in model.named_children()][:8]})")
    state = functional_state(model, tdtype, device)
    captured: dict[str, object] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            if name not in captured:
                ok = len(args) == 1 and isinstance(args[0], torch.Tensor) and args[0].is_floating_point()
                captured[name] = args[0].detach() if ok else "called with inputs other than one floating tensor"
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with eval_mode(model), torch.no_grad():
            functional_call(model, state, (xs,))
    finally:
        for h in handles:
            h.remove()
    spectra, skipped = {}, {}
    with eval_mode(model):
        for name in names:
            h = captured.get(name, "not called in the forward pass")
            if isinstance(h, str):
                skipped[name] = h
                continue
            if h.shape[0] != xs.shape[0]:
                skipped[name] = f"input batch {h.shape[0]} != {xs.shape[0]} samples"
                continue
            block = modules[name]
            sub = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
            f = _per_sample(lambda x, b=block, st=sub: functional_call(b, st, (x,)), None)
            s, conv, used, d_in, d_out, n_mv = _spectra(f, h, functional=True, method=method, k=k, tol=tol,
                                                         max_elements=max_elements, seed=seed)
            spectra[name] = JacobianSpectrum(name=name, source="layer_jacobian", kind=type(block).__name__.lower(),
                                             d_in=d_in, d_out=d_out, method=used, singular_values=s,
                                             converged=conv, n_matvec=n_mv,
                                             dtype=str(tdtype).removeprefix("torch."))
    return LayerJacobianSpectra(spectra=spectra, skipped=skipped)
