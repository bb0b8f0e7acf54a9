"""Marchenko-Pastur law (the kappa -> infinity limit of HTMP), closed forms.

Limit of the eigenvalues of W = X X^T / M for an N x M matrix X (N <= M) with i.i.d. entries of variance sigma^2.
As throughout hmu_diag.htmp the law is parametrised by the aspect ratio ``gamma = N/M <= 1`` (smaller over larger
dimension) and ``scale = sigma^2 = E[lambda]`` (the mean eigenvalue).  With edges

    lambda_-+ = scale * (1 -+ sqrt(gamma))^2

the density on [lambda_-, lambda_+] is

    rho(x) = sqrt((lambda_+ - x)(x - lambda_-)) / (2 pi gamma scale x)

and the CDF is F(x) = [G(x) - G(lambda_-)] / (2 pi gamma scale) with the antiderivative

    G(x) = r + m asin((x - m)/h) - sqrt(lambda_- lambda_+) asin(((lambda_- + lambda_+) x - 2 lambda_- lambda_+)/((lambda_+ - lambda_-) x)),
    r = sqrt((lambda_+ - x)(x - lambda_-)), m = (lambda_- + lambda_+)/2, h = (lambda_+ - lambda_-)/2.

Moments: E[lambda] = scale, Var[lambda] = gamma scale^2, E[lambda^k] = scale^k sum_{j=0}^{k-1}
gamma^j/(j+1) C(k, j) C(k-1, j) (Narayana polynomials).  Source: Marchenko & Pastur (1967); Bai & Silverstein,
"Spectral Analysis of Large Dimensional Random Matrices" (2010), Sec. 3.1.
"""
from __future__ import annotations

import math

import numpy as np

from hmu_diag.errors import OptionError
from hmu_diag.htmp._checks import as_points, check_gamma, check_scale

__all__ = ["mp_edges", "mp_pdf", "mp_logpdf", "mp_cdf", "mp_sf", "mp_moment", "mp_sample", "cdf_sf_rows"]


def mp_edges(gamma: float, scale: float = 1.0) -> tuple[float, float]:
    """Support edges ``(scale (1 - sqrt(gamma))^2, scale (1 + sqrt(gamma))^2)`` of MP(gamma, scale)."""
    g = check_gamma(gamma, "mp_edges")
    s = check_scale(scale, "mp_edges")
    r = math.sqrt(g)
    return s * (1.0 - r) ** 2, s * (1.0 + r) ** 2


def mp_pdf(x, gamma: float, scale: float = 1.0) -> np.ndarray:
    """MP density ``sqrt((l+ - x)(x - l-)) / (2 pi gamma scale x)`` on [l-, l+], 0 elsewhere (vectorised)."""
    xx = as_points(x, "mp_pdf")
    lo, hi = mp_edges(gamma, scale)
    g, s = float(gamma), float(scale)
    inside = (xx > lo) & (xx < hi) & (xx > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.sqrt(np.clip((hi - xx) * (xx - lo), 0.0, None)) / (2.0 * np.pi * g * s * xx)
    return np.where(inside, val, 0.0)


def mp_logpdf(x, gamma: float, scale: float = 1.0) -> np.ndarray:
    """Logarithm of :func:`mp_pdf` (``-inf`` outside the support)."""
    with np.errstate(divide="ignore"):
        return np.log(mp_pdf(x, gamma, scale))


def _antiderivative(x: np.ndarray, lo, hi) -> np.ndarray:
    """G(x) with the arcsines written as arctan2(y, sqrt(1 - y^2)) (1 - y^2 in factored form), which keeps full
    precision at the edges where arcsin(+-1 -+ eps) would lose half the digits.  ``lo``, ``hi`` broadcast against x
    (one law per row); where lo = 0 (gamma = 1) the last term vanishes."""
    m = 0.5 * (lo + hi)
    r = np.sqrt(np.maximum((hi - x) * (x - lo), 0.0))
    g1 = m * np.arctan2(x - m, r)
    root = np.sqrt(lo * hi)
    g2 = np.where(lo > 0.0, root * np.arctan2((lo + hi) * x - 2.0 * lo * hi, 2.0 * root * r), 0.0)
    return r + g1 - g2


_TINY = float(np.finfo(float).tiny)


def cdf_sf_rows(x: np.ndarray, gammas, scales, *, law: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(F(x), 1 - F(x)) of MP(gammas[k], scales[k]) at the points of the 2-D array ``x``, row i under law ``law[i]``
    (default: law i; validated parameters), all rows at once.  The antiderivative G is evaluated once at each law's
    ends and once at each point, clipped to the support: F = (G(x) - G(l-))/(2 pi gamma scale),
    1 - F = (G(l+) - G(x))/(...), so the upper tail keeps its relative accuracy.  The lower end is max(l-, tiny) so
    that gamma = 1 (l- = 0) stays finite."""
    gammas, scales = np.asarray(gammas, dtype=np.float64)[:, None], np.asarray(scales, dtype=np.float64)[:, None]
    r = np.sqrt(gammas)
    lo, hi = scales * (1.0 - r) ** 2, scales * (1.0 + r) ** 2
    floor = np.maximum(lo, _TINY)
    g_ends = _antiderivative(np.concatenate([floor, hi], axis=1), lo, hi)
    g_lo, g_hi, norm = g_ends[:, :1], g_ends[:, 1:], 2.0 * np.pi * gammas * scales
    if law is not None:
        lo, hi, floor, g_lo, g_hi, norm = (a[law] for a in (lo, hi, floor, g_lo, g_hi, norm))
    g_x = _antiderivative(np.minimum(np.maximum(x, floor), hi), lo, hi)
    cdf = np.minimum(np.maximum((g_x - g_lo) / norm, 0.0), 1.0)
    sf = np.minimum(np.maximum((g_hi - g_x) / norm, 0.0), 1.0)
    return (np.where(x <= lo, 0.0, np.where(x >= hi, 1.0, cdf)),
            np.where(x <= lo, 1.0, np.where(x >= hi, 0.0, sf)))


def _probability(x, gamma: float, scale: float, where: str, upper: bool) -> np.ndarray:
    """F (``upper=False``) or 1 - F (``upper=True``) of one law at points of any shape (:func:`cdf_sf_rows`), after
    checking them."""
    xx = as_points(x, where)
    g, s = check_gamma(gamma, where), check_scale(scale, where)
    return cdf_sf_rows(xx.reshape(1, -1), [g], [s])[1 if upper else 0].reshape(xx.shape)


def mp_cdf(x, gamma: float, scale: float = 1.0) -> np.ndarray:
    """MP cumulative distribution function (closed form, see the module docstring)."""
    return _probability(x, gamma, scale, "mp_cdf", upper=False)


def mp_sf(x, gamma: float, scale: float = 1.0) -> np.ndarray:
    """MP survival function 1 - F (computed from the upper edge, so it keeps relative accuracy near l+)."""
    return _probability(x, gamma, scale, "mp_sf", upper=True)


def mp_moment(k: int, gamma: float, scale: float = 1.0) -> float:
    """Raw moment E[lambda^k] = scale^k sum_{j=0}^{k-1} gamma^j C(k,j) C(k-1,j)/(j+1) (Narayana), k >= 0."""
    from math import comb

    g = check_gamma(gamma, "mp_moment")
    s = check_scale(scale, "mp_moment")
    k = int(k)
    if k < 0:
        raise OptionError(f"mp_moment: k must be >= 0, got {k}")
    if k == 0:
        return 1.0
    return s ** k * sum(g ** j * comb(k, j) * comb(k - 1, j) / (j + 1) for j in range(k))


def mp_sample(n: int, gamma: float, scale: float = 1.0, rng=None) -> np.ndarray:
    """Eigenvalues of a real Gaussian Wishart matrix whose ESD tends to MP(gamma, scale), ascending.

    Draws the n eigenvalues of W = X X^T / (n/gamma) * scale for X an n x (n/gamma) matrix of i.i.d. N(0, 1),
    using the Dumitriu-Edelman beta = 1 bidiagonal model (O(n) memory): B has diagonal chi_{n/gamma - i + 1} and
    sub-diagonal chi_{n - i}, and the eigenvalues of B B^T equal those of X X^T in distribution (the number of
    columns n/gamma may be non-integer).
    """
    from hmu_diag.htmp.sampling import _laguerre_tridiagonal_eigs

    g = check_gamma(gamma, "mp_sample")
    s = check_scale(scale, "mp_sample")
    n = int(n)
    if n < 1:
        raise OptionError(f"mp_sample: n must be a positive integer, got {n}")
    gen = np.random.default_rng(rng)
    return _laguerre_tridiagonal_eigs(n, beta=1.0, m=n / g, rng=gen) * (s * g / n)
