"""Finite-n HTMP sampler: the high-temperature beta-Laguerre ensemble as a random bidiagonal matrix (O(n) memory).

Research note htmp.md Sec. 2.4 (Dumitriu & Edelman 2002, "Matrix models for beta ensembles"): with Dyson index
beta = kappa/n and m = n/gamma "columns", let B be lower bidiagonal with

    B_ii     = chi_{beta (m - i + 1)}  = sqrt(ChiSquare(kappa/gamma - kappa (i-1)/n)),   i = 1..n
    B_{i+1,i} = chi_{beta (n - i)}     = sqrt(ChiSquare(kappa (n-i)/n)),                i = 1..n-1.

The eigenvalues of B B^T, times scale gamma/kappa, have the joint density
prod |l_i - l_j|^(kappa/n) prod l_i^(kappa (m-n+1)/(2n) - 1) exp(-kappa/(2 gamma scale) sum l_i), whose ESD tends to
HTMP(gamma, kappa, scale) as n -> inf; E[mean eigenvalue] = scale exactly.  The squared singular values of B are
computed with high relative accuracy (needed for kappa -> 0, where most eigenvalues are below 1e-16 lambda_max):
LAPACK's tridiagonal eigensolver on the Golub-Kahan form gives the bulk, and eigenvalues below 1e-6 lambda_max are
recomputed by bisection with the differential stationary qd Sturm count on the factors of B B^T
(Fernando & Parlett 1994), which is accurate to a few ulps relative.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import eigvalsh_tridiagonal

from hmu_diag.htmp._checks import check_gamma, check_kappa, check_orientation, check_scale
from hmu_diag.errors import OptionError

__all__ = ["sample"]

_TINY = np.finfo(np.float64).tiny
#: below this fraction of lambda_max eigenvalues are refined by relative-accuracy bisection
_REFINE_BELOW = 1e-10
_BISECT_STEPS = 48


def _chi(df: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """chi variates sqrt(ChiSquare(df)) for real df > 0, via log-Gamma so tiny df keeps relative accuracy.

    For shape k = df/2: G_k = G_{k+1} U^{1/k} (Marsaglia & Tsang 2000), so log G_k = log G_{k+1} + log(U)/k;
    results below the smallest normal double are clamped to it (they are zero at double precision anyway).
    """
    k = 0.5 * np.asarray(df, dtype=np.float64)
    log_g = np.log(rng.standard_gamma(k + 1.0)) + np.log(rng.random(k.shape)) / k
    return np.sqrt(np.maximum(np.exp(np.log(2.0) + log_g), _TINY))


def _sturm_count(q: np.ndarray, t2: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Number of eigenvalues of B B^T below each sigma, B lower bidiagonal with squared diagonal q and squared
    sub-diagonal t2, by the differential stationary qd transform (dstqds) on B B^T = L diag(q) L^T:
    D+_i = q_i + s_i, s_{i+1} = t2_i s_i / D+_i - sigma (mixed relatively stable, Fernando & Parlett 1994)."""
    count = np.zeros(sigma.shape, dtype=np.int64)
    s = -sigma
    neg_pivmin = -_TINY * max(1.0, float(q.max()))
    with np.errstate(all="ignore"):
        for qi, ti in zip(q[:-1].tolist(), t2.tolist()):
            dp = s + qi
            neg = dp < 0
            count += neg
            dp[dp == 0.0] = neg_pivmin
            s = s * (ti / dp) - sigma
        count += (s + q[-1]) < 0
    return count


def _refine_small(d: np.ndarray, sub: np.ndarray, eig: np.ndarray, thresh: float) -> np.ndarray:
    """Recompute the eigenvalues of B B^T below ``thresh`` by bisection in log space with dstqds counts."""
    q = d * d
    t2 = sub * sub
    k = int(_sturm_count(q, t2, np.array([thresh]))[0])
    if k == 0:
        return eig
    idx = np.arange(k)
    lo = np.full(k, math.log(_TINY))
    hi = np.full(k, math.log(thresh))
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        below = _sturm_count(q, t2, np.exp(mid)) > idx      # more than idx eigenvalues below mid -> eig_idx < mid
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    small = np.exp(0.5 * (lo + hi))
    small[_sturm_count(q, t2, np.full(k, _TINY)) > idx] = 0.0   # below the double range
    out = eig.copy()
    out[:k] = small
    return np.sort(out)


def _laguerre_tridiagonal_eigs(n: int, beta: float, m: float, rng: np.random.Generator) -> np.ndarray:
    """Eigenvalues (ascending) of B B^T for the Dumitriu-Edelman beta-Laguerre bidiagonal B (n x n, m >= n - 1)."""
    i = np.arange(1, n + 1, dtype=np.float64)
    d = _chi(beta * (m - i + 1.0), rng)
    sub = _chi(beta * (n - i[:-1]), rng)
    if n == 1:
        return d ** 2
    # Golub-Kahan: singular values of B are the positive eigenvalues of the zero-diagonal tridiagonal (d1,t1,d2,...)
    off = np.empty(2 * n - 1)
    off[0::2] = d
    off[1::2] = sub
    sv = eigvalsh_tridiagonal(np.zeros(2 * n), off, lapack_driver="sterf")[n:]
    eig = np.sort(sv * sv)
    return _refine_small(d, sub, eig, _REFINE_BELOW * eig[-1])


def sample(n: int, gamma: float, kappa: float, scale: float = 1.0, rng=None,
           orientation: str = "direct") -> np.ndarray:
    """n eigenvalues (ascending) of the finite-n HTMP model: beta-Laguerre with Dyson index kappa/n.

    ``kappa = np.inf`` draws a real Gaussian Wishart spectrum (Dyson index 1, see :func:`hmu_diag.htmp.mp_sample`),
    whose ESD tends to Marchenko-Pastur.  ``orientation="inverse"`` returns 1/lambda (ascending), with ``scale`` the
    mean of lambda.  ``rng``: seed or numpy Generator (deterministic for a given seed).  Memory O(n), time O(n^2).
    """
    g = check_gamma(gamma, "htmp.sample")
    k = check_kappa(kappa, "htmp.sample")
    sc = check_scale(scale, "htmp.sample")
    check_orientation(orientation, "htmp.sample")
    if int(n) != n or n < 1:
        raise OptionError(f"htmp.sample: n must be a positive integer, got {n!r}")
    n = int(n)
    gen = np.random.default_rng(rng)
    if k == math.inf:
        from hmu_diag.htmp.mp import mp_sample

        lam = mp_sample(n, g, sc, gen)
    else:
        lam = _laguerre_tridiagonal_eigs(n, beta=k / n, m=n / g, rng=gen) * (sc * g / k)
    if orientation == "inverse":
        with np.errstate(divide="ignore"):
            return np.sort(1.0 / lam)
    return lam
