"""Hessian of a loss with respect to a model's parameters: HVPs, top-k eigenvalues, spectral density and trace.

The Hessian is ``H = sum_b (n_b / N) H_b`` over the batches ``b`` of ``data`` (``n_b`` samples each, ``N`` in all),
where ``H_b = d^2 loss_fn(model(x_b), y_b) / d theta^2`` and ``loss_fn`` returns the **batch mean**; so ``H`` is the
Hessian of the mean loss over all samples whatever the batch sizes (PyHessian's ``dataloader_hv_product`` weighting).
``theta`` is the flattened vector of the selected parameters (``params``: all, a regex on names, a list of names or a
predicate); the other parameters and the buffers are held fixed.  The model is evaluated in ``eval()`` mode
(BatchNorm running stats, no Dropout) and never mutated.

Hessian-vector products (Pearlmutter 1994, ``Hv = d/d theta (grad L(theta)^T v)``):

* ``hvp="func"``: forward-over-reverse ``torch.func.jvp(torch.func.grad(L), (theta,), (v,))`` with the model called
  through ``torch.func.functional_call`` on cast copies of its tensors (the PyTorch tutorial's recipe);
* ``hvp="autograd"``: double backward on a cast deep copy (``autograd.grad(g, theta, grad_outputs=v)``), the path for
  TorchScript modules, which refuse ``functional_call``.  With a single batch the gradient graph is built once and
  reused, as PyHessian does.

Consumers (all in :mod:`hmu_diag.spectra.lanczos`): residual-checked top-k eigenvalues (Lanczos with full
reorthogonalisation, or ARPACK), stochastic Lanczos quadrature for the density, Hutchinson for the trace.  Power-law
fits see only the converged, positive top eigenvalues; negative curvature is reported apart (SLQ estimate of the
number of negative eigenvalues, smallest Ritz value).  Rank form: ``lambda_k ~ k^-s`` with ``s = 1/(alpha - 1)``
(Xie et al. 2022, arXiv:2201.13011).
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from hmu_diag.choices import LOSSES
from hmu_diag.errors import OptionError
from hmu_diag.model_io import (cast_module, cast_tree, eval_mode, functional_state, is_torchscript, parse_dtype)
from hmu_diag.spectra.lanczos import EigenResult, SLQResult, density_grid, hutchinson_trace, slq, top_eigenpairs

__all__ = ["HVPOperator", "HessianSpectrum", "select_parameters", "as_batches", "hvp_operator", "hessian_spectrum",
           "loss_function", "argmax_labels", "LOSSES"]

LossFn = Callable[[object, object], torch.Tensor]


def _pick(out: object, output: int | None) -> torch.Tensor:
    if output is None:
        if isinstance(out, (tuple, list)):
            raise OptionError(f"the model returns {len(out)} outputs; choose one with output=INDEX")
        return out
    if not isinstance(out, (tuple, list)) or not -len(out) <= output < len(out):
        raise OptionError(f"output={output}: the model returns a single tensor or fewer outputs")
    return out[output]


def loss_function(name: str, output: int | None = None) -> LossFn:
    """A batch-mean loss on the model's output (element ``output`` of a tuple output):

    ``"cross_entropy"`` on logits (``F.cross_entropy``), ``"nll"`` on probabilities (``F.nll_loss(log p, y)``, for
    heads that end in a softmax, e.g. MTCNN ONet's output 2), ``"mse"`` (``F.mse_loss``, targets cast to the
    output's dtype and shape)."""
    import torch.nn.functional as F

    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(_pick(out, output), y)
    if name == "nll":
        return lambda out, y: F.nll_loss(torch.log(_pick(out, output)), y)
    if name == "mse":
        return lambda out, y: F.mse_loss(_pick(out, output), y.to(_pick(out, output).dtype).view_as(_pick(out, output)))
    raise OptionError(f"loss={name!r}: expected one of {', '.join(LOSSES)}")


def argmax_labels(model: nn.Module, inputs: torch.Tensor, output: int | None = None) -> torch.Tensor:
    """The model's own predicted classes ``argmax_c f(x)_c`` (eval mode, no grad): targets for a Hessian when the
    data carry no labels (the loss is then the self-distillation cross-entropy at the model's weights)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    with eval_mode(model), torch.no_grad():
        return _pick(model(inputs.to(dtype)), output).argmax(dim=1)


def select_parameters(model: nn.Module, params: object = None) -> list[str]:
    """Names of the parameters to differentiate: all trainable ones (None), those whose name matches a regex (str,
    ``re.search``), an explicit list, or those for which a predicate is true."""
    names = [n for n, p in model.named_parameters() if p.requires_grad or is_torchscript(model)]
    if params is None:
        chosen = names
    elif isinstance(params, str):
        pattern = re.compile(params)
        chosen = [n for n in names if pattern.search(n)]
    elif callable(params):
        chosen = [n for n in names if params(n)]
    else:
        chosen = list(params)
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise OptionError(f"params: {type(model).__name__} has no parameter {unknown[0]!r} "
                              f"(has e.g. {names[:4]})")
    if not chosen:
        raise OptionError(f"params={params!r}: selects no parameter of {type(model).__name__} (has e.g. {names[:4]})")
    return chosen


def as_batches(data: object) -> list[tuple[object, object]]:
    """``(inputs, targets)``, a list of such pairs, or any iterable of them (a DataLoader) -> list of pairs."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    if isinstance(data, Iterable):
        batches = [tuple(b) for b in data]
        if batches and all(len(b) == 2 for b in batches):
            return batches
    raise OptionError(f"data: expected (inputs, targets), a list of such batches or a DataLoader, "
                      f"got {type(data).__name__}")


def _batch_size(x: object) -> int:
    while isinstance(x, (tuple, list)):
        x = x[0]
    return int(x.shape[0])


@dataclass(frozen=True)
class HVPOperator:
    """``matvec(v) = H v`` and ``gradient(theta) = grad L(theta)`` for the selected parameters flattened in ``names``
    order (``theta`` holds their values at the model's weights)."""
    matvec: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    gradient: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    theta: torch.Tensor = field(repr=False)
    names: tuple[str, ...]
    n: int
    n_samples: int
    mode: str


def hvp_operator(model: nn.Module, loss_fn: LossFn, data: object, *, params: object = None, hvp: str = "auto",
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32") -> HVPOperator:
    """The batch-size-weighted Hessian of ``loss_fn(model(x), y)`` as a matvec (see module docstring)."""
    tdtype = parse_dtype(dtype)
    names = select_parameters(model, params)
    raw = as_batches(data)
    total = sum(_batch_size(x) for x, _ in raw)
    batches = [(cast_tree(x, tdtype, device), cast_tree(y, tdtype, device), _batch_size(x) / total) for x, y in raw]
    mode = ("autograd" if is_torchscript(model) else "func") if hvp == "auto" else hvp
    if mode == "func":
        if is_torchscript(model):
            raise OptionError("hvp='func': TorchScript modules refuse torch.func.functional_call; use hvp='autograd'")
        matvec, gradient, theta = _func_hvp(model, loss_fn, batches, names, tdtype, device)
    elif mode == "autograd":
        matvec, gradient, theta = _autograd_hvp(model, loss_fn, batches, names, tdtype, device)
    else:
        raise OptionError(f"hvp={hvp!r}: expected 'auto', 'func' or 'autograd'")
    return HVPOperator(matvec=matvec, gradient=gradient, theta=theta, names=tuple(names), n=int(theta.numel()),
                       n_samples=total, mode=mode)


def _func_hvp(model, loss_fn, batches, names, dtype, device):
    state = functional_state(model, dtype, device)
    theta0 = torch.cat([state[n].reshape(-1) for n in names])
    shapes = [state[n].shape for n in names]
    sizes = [s.numel() for s in shapes]
    frozen = {k: v for k, v in state.items() if k not in set(names)}

    def loss_at(theta: torch.Tensor, x: object, y: object) -> torch.Tensor:
        tensors = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return loss_fn(functional_call(model, {**frozen, **tensors}, (x,)), y)

    def gradient(theta: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return sum(w * grad(loss_at)(theta, x, y) for x, y, w in batches)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return sum(w * jvp(lambda th: grad(loss_at)(th, x, y), (theta0,), (v,))[1] for x, y, w in batches)

    return matvec, gradient, theta0


def _autograd_hvp(model, loss_fn, batches, names, dtype, device):
    copy = cast_module(model, dtype, device)
    all_params = dict(copy.named_parameters())
    for p in all_params.values():
        p.requires_grad_(False)
    chosen = [all_params[n].requires_grad_(True) for n in names]
    sizes = [p.numel() for p in chosen]
    theta0 = torch.cat([p.detach().reshape(-1) for p in chosen]).clone()
    cache: list = []

    def grads(x: object, y: object, create_graph: bool) -> list[torch.Tensor]:
        loss = loss_fn(copy(x), y)
        g = torch.autograd.grad(loss, chosen, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if t is None else t for p, t in zip(chosen, g)]   # unused -> zero rows of H

    def gradient(theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p, t in zip(chosen, theta.split(sizes)):
                p.copy_(t.view_as(p))
        try:
            return sum(w * torch.cat([g.reshape(-1) for g in grads(x, y, False)]) for x, y, w in batches)
        finally:
            with torch.no_grad():
                for p, t in zip(chosen, theta0.split(sizes)):
                    p.copy_(t.view_as(p))

    def matvec(v: torch.Tensor) -> torch.Tensor:
        vs = [t.view_as(p) for p, t in zip(chosen, v.split(sizes))]
        single = len(batches) == 1
        out = torch.zeros_like(theta0)
        for x, y, w in batches:
            if single and not cache:
                cache.append(grads(x, y, True))
            g = cache[0] if single else grads(x, y, True)
            used = [i for i, t in enumerate(g) if t.requires_grad]
            hv = torch.autograd.grad([g[i] for i in used], chosen, grad_outputs=[vs[i] for i in used],
                                     retain_graph=single, allow_unused=True)
            out += w * torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1) for h, p in zip(hv, chosen)])
        return out

    return matvec, gradient, theta0


@dataclass(frozen=True)
class HessianSpectrum:
    """Result of :func:`hessian_spectrum`.

    evals / residuals / converged: the ``top_k`` largest Ritz values (descending), ``||Hy - lambda y||`` and
    ``residual <= tol * |lambda|``.  lambda_min: smallest Ritz value of that Krylov space (an upper bound on the
    smallest eigenvalue).  negative_fraction / n_negative: SLQ estimate of the share / number of eigenvalues
    below ``-sigma`` (clearly negative; the sign of eigenvalues within the kernel width of 0 is not resolved).
    trace, trace_stderr: Hutchinson estimate.  grid, density: Gaussian-smoothed SLQ density (kernel width sigma).
    n_hvp: Hessian-vector products used in all (each one is a pass over all of ``data``).
    """
    n_params: int
    params: str
    n_samples: int
    evals: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    tol: float
    lambda_min: float
    negative_fraction: float
    n_negative: int
    trace: float
    trace_stderr: float
    trace_probes: int
    grid: np.ndarray | None = field(repr=False)
    density: np.ndarray | None = field(repr=False)
    sigma: float
    slq: SLQResult | None = field(repr=False)
    n_hvp: int
    seconds: float
    dtype: str
    hvp: str

    @property
    def positive_evals(self) -> np.ndarray:
        """Converged top eigenvalues > 0, ascending: what power-law fits see."""
        e = self.evals[self.converged]
        return np.sort(e[e > 0])

    @property
    def negative_evals(self) -> np.ndarray:
        """Converged top eigenvalues < 0 (only when nearly all curvature is negative); never fitted."""
        e = self.evals[self.converged]
        return np.sort(e[e < 0])

    def to_frame(self, model: str = "model", *, htmp: bool = False) -> pd.DataFrame:
        """One row in the weights table format (``source="hessian"``).  The ESD columns (alpha, lambda_max,
        log_norm, ...) are computed on :attr:`positive_evals` (top-k only); extra columns: ``rank_exponent``
        ``s = 1/(alpha-1)``, ``n_converged``, ``n_negative``, ``negative_fraction``, ``lambda_min``, ``trace``,
        ``trace_stderr``, ``n_hvp``."""
        from hmu_diag.metrics import esd_row

        n = self.n_params
        row = {"model": model, "layer": self.params, "kind": "hessian", "part": "", "param": self.params,
               "shape": (n, n), "view": f"top {self.evals.size} of {n} x {n} (params x params)", "source": "hessian"}
        row.update(esd_row(self.positive_evals, N=n, M=n, dtype=self.dtype, htmp=htmp))
        row["status"] = "ok" if row.get("fit_status", "ok") == "ok" else row["fit_status"]
        row["warning"] = ""   # WeightWatcher's alpha thresholds are calibrated on weight ESDs only
        alpha = row.get("alpha", math.nan)
        row.update({"rank_exponent": 1.0 / (alpha - 1.0) if alpha > 1 else math.nan,
                    "n_converged": int(self.converged.sum()), "n_negative": self.n_negative,
                    "negative_fraction": self.negative_fraction, "lambda_min": self.lambda_min,
                    "trace": self.trace, "trace_stderr": self.trace_stderr, "n_hvp": self.n_hvp})
        return pd.DataFrame([row])


def hessian_spectrum(model: nn.Module, loss_fn: LossFn, data: object, *, params: object = None, top_k: int = 20,
                     density: bool = True, n_probes: int = 10, n_steps: int = 90, trace: bool = True,
                     trace_probes: int = 100, tol: float | None = None, method: str = "lanczos", hvp: str = "auto",
                     sigma: float | None = None, grid_points: int = 1000, device: str | torch.device = "cpu",
                     dtype: str | torch.dtype = "float32", seed: int = 0) -> HessianSpectrum:
    """Top-k eigenvalues, SLQ density and Hutchinson trace of the loss Hessian (module docstring for the definitions).

    ``top_k`` (capped at the parameter count; 0 skips), ``tol`` (relative residual, default 1e-8 in float64 and 1e-3
    in float32), ``method`` ("lanczos" or "arpack"), ``n_probes``/``n_steps`` for SLQ (10 x 90 by default: the
    measured L1 error is dominated by the probe count, not the steps), ``trace_probes`` Rademacher probes,
    ``sigma`` the density kernel width (default: SLQ range / n_steps).  Cost in HVPs: ``m + top_k`` for the top-k
    (Lanczos steps m grow until convergence, typically 2-5 top_k, plus one residual check each),
    ``n_probes * n_steps`` for the density and ``trace_probes`` for the trace.
    """
    start = time.perf_counter()
    op = hvp_operator(model, loss_fn, data, params=params, hvp=hvp, device=device, dtype=dtype)
    tdtype = parse_dtype(dtype)
    label = "all" if params is None else (params if isinstance(params, str) else ",".join(op.names))
    n_hvp = 0
    k = min(int(top_k), op.n)
    if k > 0:
        eig = top_eigenpairs(op.matvec, op.n, k, tol=tol, method=method, seed=seed, dtype=tdtype, device=device)
        n_hvp += eig.n_matvec
    else:
        eig = EigenResult(evals=np.empty(0), residuals=np.empty(0), converged=np.empty(0, bool), n_steps=0,
                          n_matvec=0, tol=math.nan, method=method, lambda_min=math.nan, lambda_min_residual=math.nan)
    grid = dens = quad = None
    width, neg_frac = math.nan, math.nan
    if density:
        quad = slq(op.matvec, op.n, n_probes=n_probes, n_steps=n_steps, seed=seed, dtype=tdtype, device=device)
        n_hvp += quad.n_matvec
        grid, width = density_grid(float(quad.nodes.min()), float(quad.nodes.max()), n_steps=n_steps, sigma=sigma,
                                   n_points=grid_points)
        dens = quad.density(grid, width)
        neg_frac = quad.mass_below(-width)   # within +-sigma of 0 the sign is below the density's resolution
    tr, tr_se = math.nan, math.nan
    if trace:
        est = hutchinson_trace(op.matvec, op.n, n_probes=trace_probes, seed=seed, dtype=tdtype, device=device)
        tr, tr_se, n_hvp = est.trace, est.stderr, n_hvp + est.n_probes
    lam_min = eig.lambda_min
    if quad is not None:
        lam_min = float(np.nanmin([lam_min, quad.nodes.min()]))
    return HessianSpectrum(
        n_params=op.n, params=label, n_samples=op.n_samples, evals=eig.evals, residuals=eig.residuals,
        converged=eig.converged, tol=eig.tol, lambda_min=lam_min, negative_fraction=neg_frac,
        n_negative=int(round(neg_frac * op.n)) if math.isfinite(neg_frac) else -1, trace=tr, trace_stderr=tr_se,
        trace_probes=trace_probes if trace else 0, grid=grid, density=dens, sigma=width, slq=quad, n_hvp=n_hvp,
        seconds=time.perf_counter() - start, dtype=str(tdtype).removeprefix("torch."), hvp=op.mode)
