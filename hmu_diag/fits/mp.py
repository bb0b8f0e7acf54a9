"""Marchenko-Pastur (MP) fit of an eigenvalue spectrum, with spikes counted against a Tracy-Widom edge.

Model: the bulk of the ``M`` eigenvalues of the smaller Gram ``W W^T`` of an ``M x N`` matrix (``M <= N``,
``gamma = M/N``) follows MP(gamma, scale) with ``scale = sigma^2`` the mean eigenvalue, support
``scale (1 -+ sqrt(gamma))^2`` (closed forms in :mod:`hmu_diag.htmp.mp`).  Eigenvalues above a
Tracy-Widom-corrected edge are *spikes* (spiked-covariance outliers) and are excluded from the bulk.

Estimator (``fit_mp``), replacing WeightWatcher's 195 KDE refits with an ad hoc ``bulk_max + sqrt(TW)`` cutoff
(research notes, weightwatcher.md sec. 2.5 and sec. 6 item 16):

1. start: ``scale = median(lambda) / Q_MP(1/2)`` (the median ignores any number of spikes below half);
2. spike threshold (Johnstone 2001, Thm 1, real case): for ``n = N - 1`` samples and ``p = M`` variables,
   ``mu = (sqrt(n) + sqrt(p))^2``, ``s = (sqrt(n) + sqrt(p)) (1/sqrt(n) + 1/sqrt(p))^(1/3)`` and
   ``lambda_max ~ v (mu + s TW1)`` with ``v = scale/N`` the entry variance; the threshold is
   ``v (mu + s q)`` with ``q`` the TW1 quantile at level ``(1 - alpha)^(1/n_matrices)`` (the largest of
   ``n_matrices`` pooled independent matrices), TW1 approximated by Chiani's shifted Gamma
   (JMVA 2014: TW1 ~ Gamma(46.446, 0.186054) - 9.84801);
3. bulk = the eigenvalues at or below the threshold; ``scale`` = least squares through the origin of the bulk's
   order statistics on the MP(gamma, 1) quantiles at levels ``(i - 1/2)/n_bulk`` (an L2 quantile / Wasserstein
   fit of the CDF, closed form);
4. repeat 2-3 until the number of spikes is unchanged (at most ``max_iter`` rounds).

Goodness of fit: ``D`` is the two-sided Kolmogorov-Smirnov distance between the bulk's empirical CDF and
MP(gamma, scale); ``loglik`` is the multinomial log-likelihood of the bulk on ``K`` equal-count bins whose
outer bins are open (``(0, e_1]`` and ``(e_{K-1}, inf)``), so that a law with hard edges (MP) and one
without (HTMP) are scored on the same footing (:func:`bins`, :func:`binned_loglik`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from hmu_diag.errors import OptionError
from hmu_diag.fits._result import FitStatus
from hmu_diag.htmp._checks import check_gamma
from hmu_diag.htmp.mp import mp_cdf, mp_edges

__all__ = ["MPFit", "fit_mp", "tw1_quantile", "tw_threshold", "ks_distance", "bins", "binned_loglik",
           "clean_evals"]

_CHIANI_K, _CHIANI_THETA, _CHIANI_SHIFT = 46.446, 0.186054, 9.84801
_QGRID = 1025          # points of the tabulated MP(gamma, 1) CDF used to invert it


@dataclass(frozen=True)
class MPFit(FitStatus):
    """Result of :func:`fit_mp` (units: those of the eigenvalues passed in).

    scale            fitted sigma^2 = mean of the MP bulk law
    gamma            aspect ratio M/N used
    bulk_min, bulk_max  MP edges scale (1 -+ sqrt(gamma))^2
    spike_threshold  Tracy-Widom cutoff; eigenvalues above it are spikes (inf when ``spikes=False``)
    num_spikes       number of eigenvalues above ``spike_threshold``
    D                KS distance between the bulk and MP(gamma, scale)
    loglik           binned log-likelihood of the bulk (module docstring)
    n                positive finite eigenvalues used; ``n_dropped`` were not (zero, negative, nan)
    status           "ok" or "failed: <why>" (then the numbers are nan)
    """

    scale: float
    gamma: float
    bulk_min: float
    bulk_max: float
    spike_threshold: float
    num_spikes: int
    D: float
    loglik: float
    n: int
    n_dropped: int = 0
    iterations: int = 0
    status: str = "ok"

    def __repr__(self) -> str:
        if not self.ok:
            return self.failed_repr()
        return (f"MPFit(scale={self.scale:.4g}, gamma={self.gamma:.4g}, "
                f"bulk=[{self.bulk_min:.4g}, {self.bulk_max:.4g}], num_spikes={self.num_spikes}, "
                f"spike_threshold={self.spike_threshold:.4g}, D={self.D:.3g}, n={self.n})")


# ------------------------------------------------------------------------------------------------ helpers


def clean_evals(evals, where: str) -> tuple[np.ndarray, int]:
    """Sorted positive finite values of ``evals`` (float64) and how many others were dropped."""
    try:
        x = np.asarray(evals, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise OptionError(f"{where}: evals must be an array of real numbers, got {type(evals).__name__}") from None
    keep = np.isfinite(x) & (x > 0)
    return np.sort(x[keep]), int(x.size - keep.sum())


@functools.lru_cache(maxsize=64)
def tw1_quantile(level: float) -> float:
    """Quantile of the Tracy-Widom law for the real case (TW1), Chiani's shifted-Gamma approximation.

    TW1 ~ Gamma(shape 46.446, scale 0.186054) - 9.84801 (Chiani, J. Multivariate Anal. 129 (2014) 69-81);
    e.g. level 0.95 -> 0.98, 0.99 -> 2.02 (tables: 0.9793, 2.0234).
    """
    return float(special.gammaincinv(_CHIANI_K, level) * _CHIANI_THETA - _CHIANI_SHIFT)


def tw_threshold(scale: float, gamma: float, m: int, *, alpha: float = 0.01, n_matrices: int = 1) -> float:
    """Largest eigenvalue of ``n_matrices`` white Wishart Grams exceeds this with probability ~``alpha``.

    Johnstone (Ann. Statist. 29 (2001), Thm 1.1) centring ``mu = (sqrt(N-1) + sqrt(M))^2`` and scaling
    ``s = (sqrt(N-1) + sqrt(M)) (1/sqrt(N-1) + 1/sqrt(M))^(1/3)`` for an M x N (M <= N = M/gamma) matrix of
    entries with variance ``scale/N``: threshold = (scale/N) (mu + s q), q = TW1 quantile at (1-alpha)^(1/n_matrices).
    """
    n_big = max(m / gamma, m + 1.0)
    a, b = math.sqrt(n_big - 1.0), math.sqrt(m)
    mu = (a + b) ** 2
    s = (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0)
    q = tw1_quantile((1.0 - alpha) ** (1.0 / max(int(n_matrices), 1)))
    return scale / n_big * (mu + s * q)


def ks_distance(cdf_values: np.ndarray, n: int, ranks: np.ndarray | None = None) -> float:
    """Two-sided KS distance sup|F_n - F| from the model CDF at the sorted data (``ranks=None``: all n points).

    With ``ranks`` (0-based ranks of a subset of the order statistics) the sup is taken over those points only,
    a lower bound of the full distance that is within ~1/len(ranks) of it for a smooth model CDF.
    """
    r = np.arange(n) if ranks is None else np.asarray(ranks)
    return float(max(np.max((r + 1) / n - cdf_values), np.max(cdf_values - r / n)))


def bins(x_sorted: np.ndarray, n_bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges and counts of K equal-count bins of sorted data (K = min(n_bins, n // 5), at least 2).

    Edges are midpoints between the order statistics at ranks floor(j n/K) - 1 and floor(j n/K); the outer bins
    are open, (0, e_1] and (e_{K-1}, inf).
    """
    n = x_sorted.size
    k = max(2, min(n_bins, n // 5))
    cuts = (np.arange(1, k) * n) // k
    return 0.5 * (x_sorted[cuts - 1] + x_sorted[cuts]), np.diff(np.concatenate(([0], cuts, [n])))


def binned_loglik(counts: np.ndarray, cdf_at_edges: np.ndarray) -> float:
    """Multinomial log-likelihood sum_j n_j log P_j of bin ``counts`` given the model CDF at the inner edges.

    -inf when a bin holding data has zero model mass.  Used for MP and HTMP alike (:func:`bins`).
    """
    probs = np.diff(np.concatenate(([0.0], np.minimum(np.maximum(cdf_at_edges, 0.0), 1.0), [1.0])))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log(np.maximum(probs, 0.0)), 0.0)
    return float(np.sum(terms))


@functools.lru_cache(maxsize=256)
def _mp_unit_quantile_table(gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(CDF values, points) of MP(gamma, 1) on a fine grid, for inverting the closed-form CDF by interpolation.

    Cached per gamma (layers of one shape share it); the arrays are read-only."""
    lo, hi = mp_edges(gamma, 1.0)
    # grid in the angle u: x = (lo+hi)/2 - (hi-lo)/2 cos(u) concentrates points at both square-root edges
    grid = 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.linspace(0.0, np.pi, _QGRID))
    values = mp_cdf(grid, gamma, 1.0)
    values.flags.writeable = grid.flags.writeable = False
    return values, grid


def _failed(gamma: float, why: str, n: int, n_dropped: int) -> MPFit:
    nan = math.nan
    return MPFit(nan, gamma, nan, nan, nan, 0, nan, nan, n, n_dropped, 0, f"failed: {why}")


# ------------------------------------------------------------------------------------------------ fit


def fit_mp(evals, gamma: float, *, spikes: bool = True, alpha: float = 0.01, n_matrices: int = 1,
           max_iter: int = 20, n_bins: int = 32) -> MPFit:
    """Fit MP(gamma, scale) to the bulk of ``evals`` and count spikes above the Tracy-Widom edge.

    Parameters
    ----------
    evals : array-like
        Eigenvalues of the smaller Gram (any order, raw units); zeros, negatives and non-finite values are
        dropped (``n_dropped``).  With ``n_matrices = B`` pooled matrices there are B*M of them.
    gamma : float
        M/N in (0, 1], M = number of eigenvalues per matrix, N the larger dimension.
    spikes : bool
        Exclude eigenvalues above the TW threshold from the bulk (default).  ``False``: fit all of them.
    alpha : float
        Size of the spike test: a white Wishart layer shows a false spike with probability ~alpha.
    max_iter : int
        Maximum fit/threshold rounds (the module docstring's steps 2-3).

    Returns an :class:`MPFit`; never raises on data (``status="failed: ..."`` with nan numbers when fewer than
    5 positive values remain), raises :class:`OptionError` for invalid options.
    """
    g = check_gamma(gamma, "fit_mp")
    if not 0.0 < alpha < 1.0:
        raise OptionError(f"fit_mp: alpha must be in (0, 1), got {alpha!r}")
    x, n_dropped = clean_evals(evals, "fit_mp")
    n = x.size
    if n < 5:
        return _failed(g, f"fewer than 5 positive eigenvalues ({n})", n, n_dropped)
    if x[-1] <= x[0] * (1.0 + 1e-12):
        return _failed(g, "all eigenvalues equal", n, n_dropped)
    m_per = max(int(round((n + n_dropped) / max(int(n_matrices), 1))), 1)
    table = _mp_unit_quantile_table(g)
    median = 0.5 * (x[(n - 1) // 2] + x[n // 2])                 # x is sorted
    scale = float(median / np.interp(0.5, *table))
    n_bulk, threshold, it = n, math.inf, 0
    edge_per_scale = tw_threshold(1.0, g, m_per, alpha=alpha, n_matrices=n_matrices) if spikes else math.inf
    for it in range(1, max_iter + 1):
        if spikes:
            threshold = scale * edge_per_scale
            new_bulk = max(int(np.searchsorted(x, threshold, side="right")), 5)
        else:
            new_bulk = n
        if it > 1 and new_bulk == n_bulk:
            break
        n_bulk = new_bulk
        q = np.interp((np.arange(n_bulk) + 0.5) / n_bulk, *table)
        scale = float(np.dot(q, x[:n_bulk]) / np.dot(q, q))
    threshold = scale * edge_per_scale
    bulk = x[:n_bulk]
    lo, hi = mp_edges(g, scale)
    edges, counts = bins(bulk, n_bins)
    values = mp_cdf(np.concatenate([bulk, edges]), g, scale)      # one evaluation: the data, then the bin edges
    return MPFit(scale=scale, gamma=g, bulk_min=float(lo), bulk_max=float(hi), spike_threshold=threshold,
                 num_spikes=n - n_bulk, D=ks_distance(values[:n_bulk], n_bulk),
                 loglik=binned_loglik(counts, values[n_bulk:]), n=n, n_dropped=n_dropped, iterations=it)
