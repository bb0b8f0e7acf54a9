"""Shape-matched random baseline for the power-law exponent α.

The fitted α of a layer depends on its aspect ratio even without any training: a Gaussian N × M matrix scores anything
from α ≈ 2 to α ≈ 25 depending on Q = N/M, M and the x_min rule (htsr_literature §4.1, anchors A13/A14; Hu et al.,
FARMS, ICML 2025).  So a layer's α is only meaningful next to the α the *same estimator* gives on a *random matrix of
the same shape*.  This module computes that null cheaply and adds it to the per-layer table.

Exact O(M) sampling of the null ESD
-----------------------------------
For W an N × M matrix (N ≥ M) of iid N(0, 1) entries, the eigenvalues of the real Wishart matrix WᵀW have the same
joint law as those of B Bᵀ, where B is the M × M lower-bidiagonal matrix (Dumitriu & Edelman, "Matrix models for beta
ensembles", J. Math. Phys. 43, 2002, β = 1 Laguerre ensemble)::

    B[i, i]   = χ_{N-i}      i = 0 … M-1
    B[i+1, i] = χ_{M-1-i}    i = 0 … M-2

with independent chi variables.  B Bᵀ is symmetric tridiagonal (diagonal d_i² + e_{i-1}², off-diagonal d_i e_i), whose
eigenvalues LAPACK ``sterf`` returns in O(M²) time and O(M) memory, against O(N M²) time and O(N M) memory for the dense
route.  α is scale-free (x_min is chosen from the data), so unit-variance entries lose nothing.  For a layer whose ESD
pools B matrices (conv kernel slices) the null pools B independent draws.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import eigvalsh_tridiagonal

from .errors import OptionError
from .fits.powerlaw import fit_power_law

BASELINE_COLUMNS = ["alpha_random", "alpha_random_lo", "alpha_random_hi", "alpha_excess", "random_like"]
DEFAULT_DRAWS = 20
DEFAULT_LEVEL = 0.9


def _check_shape(N: int, M: int, n_matrices: int) -> tuple[int, int, int]:
    N, M, n_matrices = int(N), int(M), int(n_matrices)
    if M < 2 or n_matrices < 1:
        raise OptionError(f"random baseline for a {N} x {M} matrix (x{n_matrices}): need M >= 2 and n_matrices >= 1")
    return max(N, M), min(N, M), n_matrices


def wishart_eigenvalues(N: int, M: int, *, n_matrices: int = 1, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Eigenvalues of WᵀW for ``n_matrices`` independent N × M matrices W with iid N(0, 1) entries, pooled, ascending.

    Drawn exactly from the Dumitriu-Edelman β = 1 Laguerre bidiagonal model (module docstring) in O(M) memory; the
    result has the distribution of ``np.linalg.eigvalsh(W.T @ W)`` (N, M are swapped if N < M).
    """
    N, M, n_matrices = _check_shape(N, M, n_matrices)
    rng = np.random.default_rng(rng)
    dof_diag = np.arange(N, N - M, -1, dtype=np.float64)
    dof_sub = np.arange(M - 1, 0, -1, dtype=np.float64)
    out = np.empty(n_matrices * M)
    for b in range(n_matrices):  # loop over pooled matrices (≤ k² slices), each O(M²) in LAPACK
        d = np.sqrt(rng.chisquare(dof_diag))
        e = np.sqrt(rng.chisquare(dof_sub))
        diag = d * d
        diag[1:] += e * e
        out[b * M:(b + 1) * M] = eigvalsh_tridiagonal(diag, d[:-1] * e, lapack_driver="sterf")
    out.sort()
    return out


@lru_cache(maxsize=4096)
def _random_alphas(N: int, M: int, n_matrices: int, seed: int, n_draws: int,
                   fit_items: tuple[tuple[str, Any], ...]) -> np.ndarray:
    """α of ``n_draws`` shape-matched Gaussian nulls (failed fits are dropped); cached per shape and options."""
    fit_options = dict(fit_items)
    rng = np.random.default_rng([seed, N, M, n_matrices])
    alphas = []
    for _ in range(n_draws):
        evals = wishart_eigenvalues(N, M, n_matrices=n_matrices, rng=rng)
        evals = evals[evals > evals[-1] * N * np.finfo(np.float64).eps]  # the pipeline's zero tolerance
        fit = fit_power_law(evals, **fit_options)
        if fit.status == "ok" and np.isfinite(fit.alpha):
            alphas.append(fit.alpha)
    return np.asarray(alphas, dtype=np.float64)


def random_alpha(N: int, M: int, *, n_matrices: int = 1, seed: int = 0, n_draws: int = DEFAULT_DRAWS,
                 level: float = DEFAULT_LEVEL, **fit_options: Any) -> tuple[float, float, float]:
    """α that :func:`hmu_diag.fits.powerlaw.fit_power_law` gives on a Gaussian matrix of the same shape.

    Parameters
    ----------
    N, M : matrix dimensions (any order).
    n_matrices : number of matrices pooled into the ESD (conv kernel slices), as in the per-layer table.
    seed, n_draws : the null is the α of ``n_draws`` independent exact Wishart draws (seeded per shape).
    level : coverage of the (lo, hi) interval, central quantiles of the null α.
    **fit_options : the fit options used for the real layer (e.g. ``fix_fingers``), so the estimator is the same.

    Returns
    -------
    (median, lo, hi) of the null α; all NaN when no draw could be fitted.  Results are cached per shape and options.
    """
    N, M, n_matrices = _check_shape(N, M, n_matrices)
    if n_draws < 1 or not 0 < level < 1:
        raise OptionError(f"random baseline: n_draws={n_draws} must be >= 1 and level={level} in (0, 1)")
    alphas = _random_alphas(N, M, n_matrices, int(seed), int(n_draws), tuple(sorted(fit_options.items())))
    if alphas.size == 0:
        return (np.nan, np.nan, np.nan)
    lo, med, hi = np.quantile(alphas, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return (float(med), float(lo), float(hi))


def add_random_baseline(layers: pd.DataFrame, *, seed: int = 0, n_draws: int = DEFAULT_DRAWS,
                        level: float = DEFAULT_LEVEL, **fit_options: Any) -> pd.DataFrame:
    """A copy of the per-layer table with the shape-matched random baseline of α.

    New columns (NaN / missing where the layer has no fitted α or is not a weight matrix):

    ``alpha_random``                  median null α for the layer's (N, M, pooled matrices) under the same estimator
    ``alpha_random_lo``/``_hi``       central ``level`` interval of the null α
    ``alpha_excess``                  α − alpha_random: negative = heavier-tailed than random (more learned structure)
    ``random_like``                   α inside [lo, hi]: indistinguishable from an untrained random matrix

    The number of pooled matrices is ``num_evals / M``.  Only rows with ``source == "weights"`` (when the column
    exists) get a baseline: Jacobian and Hessian spectra are not Wishart matrices.
    """
    missing = [c for c in ("N", "M", "num_evals", "alpha") if c not in layers]
    if missing:
        raise OptionError(f"add_random_baseline: the layer table lacks column(s) {', '.join(missing)}")
    out = layers.copy()
    eligible = np.isfinite(pd.to_numeric(out["alpha"], errors="coerce").to_numpy(dtype=float))
    eligible &= out["N"].notna().to_numpy() & out["M"].notna().to_numpy()
    if "source" in out:
        eligible &= out["source"].fillna("weights").eq("weights").to_numpy()
    values = np.full((len(out), 3), np.nan)
    for i in np.flatnonzero(eligible):
        row = out.iloc[i]
        pooled = max(1, int(round(float(row["num_evals"]) / float(row["M"]))))
        values[i] = random_alpha(int(row["N"]), int(row["M"]), n_matrices=pooled, seed=seed, n_draws=n_draws,
                                 level=level, **fit_options)
    alpha = pd.to_numeric(out["alpha"], errors="coerce").to_numpy(dtype=float)
    out["alpha_random"], out["alpha_random_lo"], out["alpha_random_hi"] = values.T
    out["alpha_excess"] = alpha - values[:, 0]
    inside = (alpha >= values[:, 1]) & (alpha <= values[:, 2])
    out["random_like"] = pd.array(np.where(np.isfinite(values[:, 0]), inside, pd.NA), dtype="boolean")
    return out
