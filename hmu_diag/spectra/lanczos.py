"""Matrix-free spectral estimators for a symmetric operator given only as a matvec.

Everything here is pure torch on a callable ``matvec(v: Tensor[n]) -> Tensor[n]`` (a Hessian-vector product,
``J^T J v``, or a dense matrix in the tests):

* :func:`lanczos` -- symmetric Lanczos with **full reorthogonalisation** (classical Gram-Schmidt, applied twice)
  producing the tridiagonal ``T_m = Q_m^T A Q_m``.  Without reorthogonalisation Lanczos produces "ghost" copies of
  converged eigenvalues (Paige 1976; research notes A.3: 13 unique values among a top 20 at m=80 without it).
* :func:`top_eigenpairs` -- extreme eigenvalues from the Ritz values of ``T_m``, the Krylov space grown until the
  wanted Ritz pairs converge; every reported value is then checked with an explicit residual ``||A y - theta y||``
  (one extra matvec per value), and only pairs with ``||A y - theta y|| <= tol * |theta|`` are flagged converged.  By
  the Bauer-Fike/Kahan bound for symmetric matrices an eigenvalue of ``A`` lies within ``||A y - theta y||`` of ``theta``.
  ``method="arpack"`` runs scipy's implicitly restarted Lanczos (``eigsh``) on the same matvec instead.
* :func:`slq` / :func:`gaussian_density` -- stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017, SIMAX 38:1075;
  Lin, Saad & Yang 2016): for a normalised Rademacher probe ``v``, ``m`` Lanczos steps give nodes ``theta_i`` (Ritz
  values) and weights ``tau_i = (e_1^T s_i)^2``; the spectral density is estimated by
  ``phi(t) = (1/n_v) sum_probes sum_i tau_i g_sigma(t - theta_i)`` with a Gaussian kernel ``g_sigma``.
* :func:`hutchinson_trace` -- ``tr(A) ~ (1/m) sum_j z_j^T A z_j`` with Rademacher ``z_j`` (Hutchinson 1990),
  a fixed probe count (no early stopping), standard error ``std(z^T A z) / sqrt(m)``.

Random probes are drawn on the CPU from a seeded ``torch.Generator`` and then moved to the device, so a given seed
gives the same probes on every device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from hmu_diag.errors import OptionError
from hmu_diag.model_io import parse_dtype

Matvec = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "LanczosResult", "EigenResult", "SLQResult", "TraceEstimate",
    "lanczos", "top_eigenpairs", "slq", "gaussian_density", "density_grid", "hutchinson_trace", "rademacher",
]


def rademacher(n: int, *, generator: torch.Generator, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """A vector of ``n`` independent +-1 entries (drawn on the CPU from ``generator``, then moved to ``device``)."""
    z = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8)
    return (2 * z - 1).to(dtype=dtype, device=device)


@dataclass(frozen=True)
class LanczosResult:
    """``T = tridiag(beta, alpha, beta)`` with ``A Q^T = Q^T T + beta_last q_{m+1} e_m^T``; ``Q`` is (m, n) with
    orthonormal rows."""
    alpha: torch.Tensor
    beta: torch.Tensor
    beta_last: float
    Q: torch.Tensor = field(repr=False)
    n_matvec: int

    @property
    def n_steps(self) -> int:
        return int(self.alpha.shape[0])

    def tridiagonal(self) -> torch.Tensor:
        """The dense (m, m) tridiagonal matrix T."""
        return _tridiagonal(self.alpha, self.beta)


def _lanczos_steps(matvec: Matvec, Q: torch.Tensor, alpha: list, beta: list, start: int, stop: int,
                   tol_breakdown: float) -> tuple[int, bool]:
    """Run Lanczos steps ``start..stop-1`` in place; ``Q[start]`` holds the current unit vector.

    Appends ``alpha_j = q_j^T A q_j`` and ``beta_j = ||r_j||`` (so ``len(beta) == len(alpha)``) and stores the next
    unit vector in ``Q[j + 1]`` (``Q`` needs ``min(stop + 1, n)`` rows).  Returns (steps done, invariant subspace
    reached), the latter when ``beta_j <= tol_breakdown * max(|alpha|, |beta|)`` or the basis spans all of R^n.
    """
    n = Q.shape[1]
    scale = max([abs(x) for x in alpha] + [abs(x) for x in beta] + [1e-300])
    for j in range(start, stop):
        q = Q[j]
        w = matvec(q)
        a = float(torch.dot(q, w))
        basis = Q[: j + 1]
        w = w - basis.T @ (basis @ w)       # full reorthogonalisation (also removes the 3-term recurrence terms)
        w = w - basis.T @ (basis @ w)       # twice is enough (Giraud, Langou & Rozloznik 2005)
        b = float(torch.linalg.vector_norm(w))
        alpha.append(a)
        scale = max(scale, abs(a), b)
        if b <= tol_breakdown * scale or j + 1 == n:
            beta.append(0.0)
            return j + 1, True              # invariant subspace: T's eigenvalues are exact eigenvalues of A
        beta.append(b)
        Q[j + 1] = w / b
    return stop, False


def _tridiagonal(diagonal: Sequence[float] | torch.Tensor, off: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Dense symmetric tridiagonal float64 matrix from its diagonal (m) and off-diagonal (m - 1)."""
    a = torch.as_tensor(diagonal, dtype=torch.float64)
    b = torch.as_tensor(off, dtype=torch.float64)
    return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def _start(v0: torch.Tensor, rows: int) -> torch.Tensor:
    Q = torch.zeros(rows, v0.shape[0], dtype=v0.dtype, device=v0.device)
    Q[0] = v0 / torch.linalg.vector_norm(v0)
    return Q


def lanczos(matvec: Matvec, v0: torch.Tensor, n_steps: int, *, breakdown_tol: float | None = None) -> LanczosResult:
    """``n_steps`` of symmetric Lanczos with full reorthogonalisation, started from ``v0`` (normalised here).

    Stops early (fewer steps) when the Krylov space becomes invariant, i.e. ``beta_j <= breakdown_tol * max|T|``
    (default ``breakdown_tol`` = 100 * machine epsilon of ``v0``'s dtype), or when ``n_steps`` reaches ``n``.
    """
    n = v0.shape[0]
    m = min(int(n_steps), n)
    if m < 1:
        raise OptionError(f"n_steps={n_steps}: Lanczos needs at least one step")
    tol = 100 * torch.finfo(v0.dtype).eps if breakdown_tol is None else breakdown_tol
    Q = _start(v0, min(m + 1, n))
    alpha: list[float] = []
    beta: list[float] = []
    done, _ = _lanczos_steps(matvec, Q, alpha, beta, 0, m, tol)
    return LanczosResult(alpha=torch.tensor(alpha, dtype=torch.float64),
                         beta=torch.tensor(beta[: done - 1], dtype=torch.float64),
                         beta_last=beta[done - 1], Q=Q[:done], n_matvec=done)


@dataclass(frozen=True)
class EigenResult:
    """Extreme eigenvalues of a symmetric operator with explicit residuals.

    evals: the requested Ritz values (descending for which="LA"/"LM", ascending for "SA"), float64.
    residuals: ``||A y_i - theta_i y_i||`` for unit Ritz vectors ``y_i`` (explicit matvec).
    converged: ``residuals <= tol * |evals|``.  lambda_min / lambda_min_residual: smallest Ritz value of the same
    Krylov space and its residual estimate ``|beta_m s_{m,i}|`` (an upper bound on the smallest eigenvalue).
    """
    evals: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    n_steps: int
    n_matvec: int
    tol: float
    method: str
    lambda_min: float
    lambda_min_residual: float
    eigenvectors: torch.Tensor | None = field(default=None, repr=False)

    @property
    def converged_evals(self) -> np.ndarray:
        return self.evals[self.converged]


def _order(theta: torch.Tensor, which: str) -> torch.Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)
    if which == "SA":
        return torch.argsort(theta)
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True)
    raise OptionError(f"which={which!r}: expected 'LA', 'SA' or 'LM'")


def _explicit_residuals(matvec: Matvec, Y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``||A y_i - theta_i y_i||`` for the rows ``y_i`` of Y (one matvec each)."""
    AY = torch.stack([matvec(y) for y in Y]) if Y.shape[0] else Y
    return torch.linalg.vector_norm(AY - theta.to(Y.dtype)[:, None] * Y, dim=1).double().cpu()


def top_eigenpairs(matvec: Matvec, n: int, k: int, *, which: str = "LA", tol: float | None = None,
                   n_steps: int | None = None, max_steps: int | None = None, method: str = "lanczos",
                   seed: int = 0, dtype: str | torch.dtype = "float64", device: str | torch.device = "cpu",
                   return_eigenvectors: bool = False) -> EigenResult:
    """The ``k`` extreme eigenvalues of the symmetric ``n x n`` operator ``matvec``, residual-checked.

    method="lanczos": Lanczos with full reorthogonalisation from a seeded Gaussian start: at least ``n_steps``
    steps (default ``k + 10``), then one step at a time until the Ritz residual estimates ``|beta_m s_{m,i}|`` of the
    wanted ``k`` values are below ``tol * |theta_i|`` (in practice m ~ 2-5 k; a fixed m = 2k gave 27 % error on a
    top-10 in the research notes) or ``max_steps`` (default ``max(10k, 200)``) is reached.
    When the Krylov space becomes invariant (exact breakdown: low rank, or few distinct eigenvalues), a new chain is
    started from a random vector orthogonal to it (T gets a zero off-diagonal), so a repeated eigenvalue is found
    once per chain.  Chains start only at breakdowns, so a Krylov method with one start vector can still undercount
    the multiplicity of a repeated top eigenvalue whose chain has not broken down; prefer exact spectra for
    operators such as elementwise activations or pooling (Jacobian ``method="exact"``).
    method="arpack": ``scipy.sparse.linalg.eigsh`` on a LinearOperator (ARPACK implicitly restarted Lanczos,
    host round-trips).  Either way, the returned Ritz vectors are applied once
    more to get explicit residuals.  Default ``tol``: 1e-8 in float64, 1e-3 in float32.
    """
    tdtype = parse_dtype(dtype)
    if not 1 <= k <= n:
        raise OptionError(f"k={k}: expected 1 <= k <= n={n}")
    tol = (1e-8 if tdtype == torch.float64 else 1e-3) if tol is None else float(tol)
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=tdtype, device=device)
    if method == "arpack":
        return _arpack(matvec, v0, k, which, tol, return_eigenvectors)
    if method != "lanczos":
        raise OptionError(f"method={method!r}: expected 'lanczos' or 'arpack'")
    m = min(n, n_steps or k + 10)
    m_max = min(n, max(max_steps or max(10 * k, 200), m))
    bd_tol = 100 * torch.finfo(tdtype).eps
    Q = _start(v0, min(n, max(m + 1, 2 * k + 20)))
    alpha: list[float] = []
    beta: list[float] = []
    done, invariant = _lanczos_steps(matvec, Q, alpha, beta, 0, m, bd_tol)
    last_top: torch.Tensor | None = None
    while True:   # one more step at a time until the wanted Ritz pairs converge (T's eigh is cheap next to a matvec)
        theta, S = torch.linalg.eigh(_tridiagonal(alpha, beta[: done - 1]))
        est = (beta[done - 1] * S[-1, :]).abs()
        sel = _order(theta, which)[:k]
        if done >= m_max:
            break
        if Q.shape[0] < min(n, done + m + 1):
            Q = torch.cat([Q, Q.new_zeros(min(n, max(2 * Q.shape[0], done + m + 1)) - Q.shape[0], n)])
        if invariant:
            # The Krylov space is invariant: a single chain sees each repeated eigenvalue once.  Start a new chain
            # orthogonal to it (T gets a zero off-diagonal) so further copies can be found, unless the last new
            # chain changed none of the wanted values (e.g. a low-rank operator whose new chains only add zeros).
            top = theta[sel]
            if last_top is not None and top.shape == last_top.shape and bool(
                    torch.allclose(top, last_top, rtol=tol, atol=tol * float(theta.abs().max()))):
                break
            last_top = top
            w = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=tdtype, device=device)
            basis = Q[:done]
            w = w - basis.T @ (basis @ w)
            w = w - basis.T @ (basis @ w)
            Q[done] = w / torch.linalg.vector_norm(w)
            done, invariant = _lanczos_steps(matvec, Q, alpha, beta, done, min(m_max, done + m), bd_tol)
            continue
        if bool((est[sel] <= tol * theta[sel].abs()).all()):
            break
        done, invariant = _lanczos_steps(matvec, Q, alpha, beta, done, done + 1, bd_tol)
    Y = S[:, sel].T.to(dtype=tdtype, device=Q.device) @ Q[:done]
    res = _explicit_residuals(matvec, Y, theta[sel]).numpy()
    evals = theta[sel].numpy().astype(np.float64)
    imin = int(torch.argmin(theta))
    return EigenResult(evals=evals, residuals=res, converged=res <= tol * np.abs(evals),
                       n_steps=done, n_matvec=done + len(evals), tol=tol, method="lanczos",
                       lambda_min=float(theta[imin]), lambda_min_residual=float(est[imin]),
                       eigenvectors=Y if return_eigenvectors else None)


def _arpack(matvec: Matvec, v0: torch.Tensor, k: int, which: str, tol: float, return_eigenvectors: bool) -> EigenResult:
    import scipy.sparse.linalg as sla

    n, dev, dt = v0.shape[0], v0.device, v0.dtype
    count = [0]

    def mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        return matvec(torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=dt, device=dev)).double().cpu().numpy()

    op = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    if k >= n - 1:
        raise OptionError(f"method='arpack' needs k < n - 1 (k={k}, n={n}); use method='lanczos'")
    w, V = sla.eigsh(op, k=k, which=which, tol=tol / 10, v0=v0.double().cpu().numpy())
    theta = torch.from_numpy(w)
    sel = _order(theta, which)
    Y = torch.from_numpy(V[:, sel.numpy()].T.copy()).to(dtype=dt, device=dev)
    n_arpack = count[0]
    res = _explicit_residuals(matvec, Y, theta[sel]).numpy()
    evals = theta[sel].numpy()
    return EigenResult(evals=evals, residuals=res, converged=res <= tol * np.abs(evals), n_steps=n_arpack,
                       n_matvec=n_arpack + k, tol=tol, method="arpack", lambda_min=float("nan"),
                       lambda_min_residual=float("nan"), eigenvectors=Y if return_eigenvectors else None)


@dataclass(frozen=True)
class SLQResult:
    """Stochastic Lanczos quadrature: per probe, Ritz nodes and their weights tau = (e_1^T s_i)^2 (sum to 1).

    nodes, weights: (n_probes, n_steps) float64 arrays; probes whose Krylov space became invariant early are padded
    with weight 0.  ``density(grid, sigma)`` evaluates the smoothed estimate, ``trace`` the quadrature trace
    ``n * mean_probes sum_i tau_i theta_i``.
    """
    nodes: np.ndarray
    weights: np.ndarray
    n: int
    n_matvec: int

    def density(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        return gaussian_density(grid, self.nodes, self.weights / self.nodes.shape[0], sigma)

    @property
    def trace(self) -> float:
        return float(self.n * (self.nodes * self.weights).sum() / self.nodes.shape[0])

    def mass_below(self, x: float = 0.0) -> float:
        """Estimated fraction of eigenvalues below ``x`` (quadrature weights of nodes < x)."""
        return float((self.weights * (self.nodes < x)).sum() / self.nodes.shape[0])


def slq(matvec: Matvec, n: int, *, n_probes: int = 10, n_steps: int = 90, seed: int = 0,
        dtype: str | torch.dtype = "float64", device: str | torch.device = "cpu") -> SLQResult:
    """SLQ with ``n_probes`` normalised Rademacher probes and ``n_steps`` fully reorthogonalised Lanczos steps each."""
    tdtype = parse_dtype(dtype)
    if n_probes < 1 or n_steps < 1:
        raise OptionError(f"n_probes={n_probes}, n_steps={n_steps}: both must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    m = min(n_steps, n)
    nodes = np.zeros((n_probes, m))
    weights = np.zeros((n_probes, m))
    total = 0
    for p in range(n_probes):
        res = lanczos(matvec, rademacher(n, generator=gen, dtype=tdtype, device=device), m)
        theta, S = torch.linalg.eigh(res.tridiagonal())
        r = res.n_steps
        nodes[p, :r] = theta.numpy()
        nodes[p, r:] = theta[-1].item()
        weights[p, :r] = (S[0, :] ** 2).numpy()
        total += res.n_matvec
    return SLQResult(nodes=nodes, weights=weights, n=n, n_matvec=total)


def gaussian_density(grid: np.ndarray, centers: np.ndarray, weights: np.ndarray | float, sigma: float) -> np.ndarray:
    """``phi(t) = sum_i w_i exp(-(t - c_i)^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` on ``grid`` (vectorised).

    With weights ``1/n`` on the exact eigenvalues this is the Gaussian-smoothed ESD the SLQ estimate targets.
    """
    grid = np.asarray(grid, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64).reshape(-1)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), np.shape(centers)).reshape(-1)
    out = np.zeros_like(grid)
    for lo in range(0, c.size, 4096):  # chunks bound the (grid x centers) temporary
        z = (grid[:, None] - c[None, lo:lo + 4096]) / sigma
        out += np.exp(-0.5 * z * z) @ w[lo:lo + 4096]
    return out / (sigma * math.sqrt(2 * math.pi))


def density_grid(lo: float, hi: float, *, n_steps: int, sigma: float | None = None,
                 n_points: int = 1000) -> tuple[np.ndarray, float]:
    """Grid over ``[lo - 3 sigma, hi + 3 sigma]`` and the kernel width (default ``sigma = (hi - lo) / n_steps``,
    the resolution of an ``n_steps``-step Lanczos run; hessian-eigenthings' default)."""
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    s = float(sigma) if sigma is not None else width / n_steps
    return np.linspace(lo - 3 * s, hi + 3 * s, n_points), s


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson trace: mean of ``z^T A z`` over ``n_probes`` Rademacher probes, with its standard error."""
    trace: float
    stderr: float
    n_probes: int
    samples: np.ndarray = field(repr=False)


def hutchinson_trace(matvec: Matvec, n: int, *, n_probes: int = 100, seed: int = 0,
                     dtype: str | torch.dtype = "float64", device: str | torch.device = "cpu") -> TraceEstimate:
    """``tr(A) ~ mean_j z_j^T A z_j``, z_j Rademacher; stderr = sample std (ddof=1) / sqrt(n_probes)."""
    tdtype = parse_dtype(dtype)
    if n_probes < 2:
        raise OptionError(f"n_probes={n_probes}: Hutchinson needs at least 2 probes for a standard error")
    gen = torch.Generator().manual_seed(seed)
    samples = np.empty(n_probes)
    for j in range(n_probes):
        z = rademacher(n, generator=gen, dtype=tdtype, device=device)
        samples[j] = float(torch.dot(z, matvec(z)))
    return TraceEstimate(trace=float(samples.mean()), stderr=float(samples.std(ddof=1) / math.sqrt(n_probes)),
                         n_probes=n_probes, samples=samples)
