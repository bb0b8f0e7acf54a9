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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from hmu_diag.errors import OptionError
from hmu_diag.fits._batch import RowCache, Segments
from hmu_diag.fits._result import FitStatus
from hmu_diag.fits._values import positive_sorted, positive_sorted_many
from hmu_diag.htmp._checks import check_gamma
from hmu_diag.htmp.mp import cdf_sf_rows

__all__ = ["MPFit", "fit_mp", "fit_mp_many", "per_matrix_count", "tw1_quantile", "tw_threshold", "ks_distance", "bins",
           "binned_loglik", "clean_evals", "clean_many"]

ArrayOrFloat = float | np.ndarray | Sequence[float]
_CHIANI_K, _CHIANI_THETA, _CHIANI_SHIFT = 46.446, 0.186054, 9.84801
#: points of the tabulated MP(gamma, 1) CDF that is inverted by interpolation: quantiles within 1e-5 absolute (the
#: mean is 1; measured against brentq on the closed form at gamma 0.01-1; 1025 points: 2.4e-6, 1.1x the cost)
_QGRID = 513


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
        return positive_sorted(evals)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: evals must be an array of real numbers, got {type(evals).__name__}") from None


def clean_many(evals_list: Sequence, where: str) -> list[tuple[np.ndarray, int]]:
    """:func:`clean_evals` of each entry, the spectra that need no cleaning recognised in one pass
    (:func:`hmu_diag.fits._values.positive_sorted_many`)."""
    try:
        return positive_sorted_many(evals_list)
    except (TypeError, ValueError):
        for evals in evals_list:              # the first entry that is not an array of numbers raises with its type
            clean_evals(evals, where)
        raise


@functools.lru_cache(maxsize=64)
def tw1_quantile(level: float) -> float:
    """Quantile of the Tracy-Widom law for the real case (TW1), Chiani's shifted-Gamma approximation.

    TW1 ~ Gamma(shape 46.446, scale 0.186054) - 9.84801 (Chiani, J. Multivariate Anal. 129 (2014) 69-81);
    e.g. level 0.95 -> 0.98, 0.99 -> 2.02 (tables: 0.9793, 2.0234).
    """
    return float(special.gammaincinv(_CHIANI_K, level) * _CHIANI_THETA - _CHIANI_SHIFT)


def per_matrix_count(n: int, n_dropped: int, n_matrices: int) -> int:
    """Eigenvalues per pooled matrix, M: (kept + dropped) / n_matrices, at least 1."""
    return max(int(round((n + n_dropped) / max(int(n_matrices), 1))), 1)


def tw_threshold(scale: ArrayOrFloat, gamma: ArrayOrFloat, m: ArrayOrFloat, *, alpha: float = 0.01,
                 n_matrices: ArrayOrFloat = 1) -> ArrayOrFloat:
    """Largest eigenvalue of ``n_matrices`` white Wishart Grams exceeds this with probability ~``alpha``.

    Johnstone (Ann. Statist. 29 (2001), Thm 1.1) centring ``mu = (sqrt(N-1) + sqrt(M))^2`` and scaling
    ``s = (sqrt(N-1) + sqrt(M)) (1/sqrt(N-1) + 1/sqrt(M))^(1/3)`` for an M x N (M <= N = M/gamma) matrix of
    entries with variance ``scale/N``: threshold = (scale/N) (mu + s q), q = TW1 quantile at (1-alpha)^(1/n_matrices).
    Vectorised over ``scale``, ``gamma``, ``m`` and ``n_matrices`` (broadcast together; a float for scalars).
    """
    m = np.asarray(m, dtype=np.float64)
    n_big = np.maximum(m / gamma, m + 1.0)
    a, b = np.sqrt(n_big - 1.0), np.sqrt(m)
    mu = (a + b) ** 2
    s = (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0)
    counts = np.maximum(np.asarray(n_matrices, dtype=np.int64), 1)
    if counts.ndim == 0:
        q = tw1_quantile((1.0 - alpha) ** (1.0 / int(counts)))
    else:                                  # one quantile per distinct count
        counts, which = np.unique(counts, return_inverse=True)
        q = np.array([tw1_quantile((1.0 - alpha) ** (1.0 / c)) for c in counts.tolist()])[which]
    out = scale / n_big * (mu + s * q)
    return float(out) if np.ndim(out) == 0 else out


def ks_distance(cdf_values: np.ndarray, n: int, ranks: np.ndarray | None = None) -> float:
    """Two-sided KS distance sup|F_n - F| from the model CDF at the sorted data (``ranks=None``: all n points).

    With ``ranks`` (0-based ranks of a subset of the order statistics) the sup is taken over those points only,
    a lower bound of the full distance that is within ~1/len(ranks) of it for a smooth model CDF.
    """
    r = np.arange(n) if ranks is None else np.asarray(ranks)
    return float(ks_rows(np.asarray(cdf_values)[None, :], r[None, :], np.array([float(n)]), True)[0])


def ks_rows(cdf_values: np.ndarray, ranks: np.ndarray, n: np.ndarray, valid) -> np.ndarray:
    """:func:`ks_distance` of many samples at once: row i has the model CDF at the order statistics of 0-based
    ``ranks[i]`` of its ``n[i]`` values, over the columns where ``valid`` holds: max(max (r+1)/n - F, max F - r/n)."""
    n = np.asarray(n, dtype=np.float64)[:, None]
    gap = np.maximum((ranks + 1) / n - cdf_values, cdf_values - ranks / n)
    return np.where(valid, gap, -np.inf).max(axis=1)


def bins(x_sorted: np.ndarray, n_bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges and counts of K equal-count bins of sorted data (K = min(n_bins, n // 5), at least 2).

    Edges are midpoints between the order statistics at ranks floor(j n/K) - 1 and floor(j n/K); the outer bins
    are open, (0, e_1] and (e_{K-1}, inf).  :func:`bin_rows` of one sample.
    """
    edges, counts, inner = bin_rows(np.asarray(x_sorted), np.array([0]), np.array([x_sorted.size]), n_bins)
    k = int(inner.sum()) + 1
    return edges[0, :k - 1], counts[0, :k]


def bin_rows(values: np.ndarray, starts: np.ndarray, n: np.ndarray,
             n_bins: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bins` of many sorted samples at once, sample i being ``values[starts[i]:starts[i] + n[i]]`` of a 1-D
    array: (inner edges (samples, n_bins - 1), counts (samples, n_bins), inner-edge mask (samples, n_bins - 1)).  A
    sample with K bins has its K - 1 edges in the first columns (the mask marks them) and zero counts after its K-th
    bin."""
    n = np.asarray(n)
    k = np.maximum(2, np.minimum(n_bins, n // 5))[:, None]
    j = np.arange(1, n_bins)
    inner = j < k
    cuts = np.where(inner, (j * n[:, None]) // k, 1)
    at = np.asarray(starts)[:, None] + cuts
    edges = 0.5 * (values[at - 1] + values[at])
    ends = n[:, None]
    counts = np.diff(np.concatenate([np.zeros_like(ends), np.where(inner, cuts, ends), ends], axis=1), axis=1)
    return edges, counts, inner


def binned_loglik(counts: np.ndarray, cdf_at_edges: np.ndarray) -> float:
    """Multinomial log-likelihood sum_j n_j log P_j of bin ``counts`` given the model CDF at the inner edges.

    -inf when a bin holding data has zero model mass.  Used for MP and HTMP alike (:func:`bins`).
    """
    edges = np.asarray(cdf_at_edges, dtype=np.float64)[None, :]
    return float(binned_loglik_rows(np.asarray(counts)[None, :], edges, np.ones(edges.shape, dtype=bool))[0])


def binned_loglik_rows(counts: np.ndarray, cdf_at_edges: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """:func:`binned_loglik` of many samples at once, with the layout of :func:`bin_rows` (edges outside ``inner``
    are ignored)."""
    cdf = np.minimum(np.maximum(np.where(inner, cdf_at_edges, 1.0), 0.0), 1.0)
    ones = np.ones((cdf.shape[0], 1))
    probs = np.diff(np.concatenate([np.zeros_like(ones), cdf, ones], axis=1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, counts * np.log(np.maximum(probs, 0.0)), 0.0).sum(axis=1)


def _quantile_table_rows(gammas: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(CDF values, points) of MP(gamma, 1) on a fine grid for each gamma (one vectorised evaluation), for inverting
    the closed-form CDF by interpolation.  The grid is in the angle u: x = (lo+hi)/2 - (hi-lo)/2 cos(u), which
    concentrates points at both square-root edges.  The arrays are read-only (they are cached)."""
    root = np.sqrt(np.array(gammas))[:, None]
    lo, hi = (1.0 - root) ** 2, (1.0 + root) ** 2
    grids = 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.linspace(0.0, np.pi, _QGRID))
    values, _ = cdf_sf_rows(grids, np.array(gammas), np.ones(len(gammas)))
    values.flags.writeable = grids.flags.writeable = False
    return list(zip(values, grids))


#: the MP(gamma, 1) quantile tables, cached per gamma: layers of one shape share them
_mp_unit_quantile_tables = RowCache(_quantile_table_rows, maxsize=256)


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
    5 positive values remain), raises :class:`OptionError` for invalid options.  :func:`fit_mp_many` fits many
    spectra at once.
    """
    return fit_mp_many([evals], [gamma], spikes=spikes, alpha=alpha, n_matrices=[n_matrices], max_iter=max_iter,
                       n_bins=n_bins)[0]


def fit_mp_many(evals_list: Sequence, gammas: Sequence[float], *, spikes: bool = True, alpha: float = 0.01,
                n_matrices: Sequence[int] | None = None, max_iter: int = 20, n_bins: int = 32) -> list[MPFit]:
    """:func:`fit_mp` of many spectra with the same options (``n_matrices[i]`` per spectrum, default 1).

    All spectra go through the rounds together (each leaves when its spike count is unchanged): the quantile
    levels of every spectrum of one gamma are interpolated in one call, the least-squares scales are running sums,
    and D and the log-likelihood of all bulks are evaluated at once.  Each result equals that spectrum's fit alone.
    Raises :class:`OptionError` on invalid options or an invalid gamma.
    """
    if not 0.0 < alpha < 1.0:
        raise OptionError(f"fit_mp: alpha must be in (0, 1), got {alpha!r}")
    count = len(evals_list)
    n_matrices = [1] * count if n_matrices is None else list(n_matrices)
    if len(gammas) != count or len(n_matrices) != count:
        raise OptionError("fit_mp_many: evals_list, gammas and n_matrices must have one entry per spectrum")
    results: list[MPFit | None] = [None] * count
    batch = []
    for i, (gamma, (x, n_dropped)) in enumerate(zip(gammas, clean_many(evals_list, "fit_mp"))):
        g = check_gamma(gamma, "fit_mp")
        if x.size < 5:
            results[i] = _failed(g, f"fewer than 5 positive eigenvalues ({x.size})", x.size, n_dropped)
        elif x[-1] <= x[0] * (1.0 + 1e-12):
            results[i] = _failed(g, "all eigenvalues equal", x.size, n_dropped)
        else:
            batch.append((i, x, g, n_dropped))
    if batch:
        fitted = _fit_mp_batch(batch, spikes=spikes, alpha=alpha, n_matrices=n_matrices, max_iter=max_iter,
                               n_bins=n_bins)
        for (i, *_), result in zip(batch, fitted):
            results[i] = result
    return results


def _fit_mp_batch(batch: list[tuple[int, np.ndarray, float, int]], *, spikes: bool, alpha: float,
                  n_matrices: list[int], max_iter: int, n_bins: int) -> list[MPFit]:
    """:func:`fit_mp_many` on validated, cleaned spectra ``(index, sorted values, gamma, n_dropped)``."""
    series = Segments([x for _, x, _, _ in batch])
    sizes, starts, values = series.sizes, series.starts, series.values
    gammas = np.array([g for _, _, g, _ in batch])
    distinct, group = np.unique(gammas, return_inverse=True)       # one quantile table per gamma
    tables = _mp_unit_quantile_tables(distinct.tolist())
    element_group = series.per_element(group, -1)
    members = [np.flatnonzero(element_group == k) for k in range(distinct.size)]      # each table's elements
    median = 0.5 * (values[starts + (sizes - 1) // 2] + values[starts + sizes // 2])
    scale = median / np.array([np.interp(0.5, *table) for table in tables])[group]
    per_matrix = [per_matrix_count(x.size, n_dropped, n_matrices[i]) for i, x, _, n_dropped in batch]
    edge_per_scale = (tw_threshold(1.0, gammas, per_matrix, alpha=alpha, n_matrices=[n_matrices[i] for i, *_ in batch])
                      if spikes else np.full(len(batch), math.inf))
    n_bulk = sizes.copy()
    iterations = np.zeros(len(batch), dtype=int)
    active = np.arange(len(batch))
    for it in range(1, max_iter + 1):
        iterations[active] = it
        if spikes:
            below = (values <= series.per_element(scale * edge_per_scale, -np.inf)).astype(np.float64)
            new_bulk = np.maximum(series.prefix_reduce([below], active, sizes[active])[0].astype(np.intp), 5)
        else:
            new_bulk = sizes[active]
        if it > 1:
            moved = new_bulk != n_bulk[active]
            active, new_bulk = active[moved], new_bulk[moved]
        if active.size == 0:
            break
        n_bulk[active] = new_bulk
        # least squares through the origin on the MP(gamma, 1) quantiles at levels (i + 1/2)/n_bulk
        levels = (series.position + 0.5) / series.per_element(n_bulk, 1.0)
        q = np.zeros(values.size)
        for k in sorted(set(group[active].tolist())):
            q[members[k]] = np.interp(levels[members[k]], *tables[k])
        sum_qx, sum_qq = series.prefix_reduce([q * values, q * q], active, new_bulk)
        scale[active] = sum_qx / sum_qq
    return _mp_results(batch, series, gammas, n_bulk, scale, edge_per_scale, iterations, n_bins)


def _mp_results(batch, series: Segments, gammas: np.ndarray, n_bulk: np.ndarray, scale: np.ndarray,
                edge_per_scale: np.ndarray, iterations: np.ndarray, n_bins: int) -> list[MPFit]:
    """The :class:`MPFit` of each spectrum: edges, spike threshold, and D and the binned log-likelihood of its bulk."""
    rows = np.arange(len(batch))
    edges, counts, inner = bin_rows(series.values, series.starts, n_bulk, n_bins)
    # the CDF at every element, each its own row under its spectrum's law (the sentinel: a last law, MP(1, 1))
    cdf, _ = cdf_sf_rows(series.values[:, None], np.append(gammas, 1.0), np.append(scale, 1.0),
                         law=series.per_element(rows, rows.size))
    # the KS gap at every element (each its own row of ks_rows), then its maximum over each bulk
    gap = ks_rows(cdf, series.position[:, None], series.per_element(n_bulk, 1.0), True)
    D = series.prefix_reduce([gap], rows, n_bulk, np.maximum)[0]
    loglik = binned_loglik_rows(counts, cdf_sf_rows(edges, gammas, scale)[0], inner)
    root = np.sqrt(gammas)
    out = []
    for row, (_, x, g, n_dropped) in enumerate(batch):
        s, r = float(scale[row]), float(root[row])
        out.append(MPFit(scale=s, gamma=g, bulk_min=s * (1.0 - r) ** 2, bulk_max=s * (1.0 + r) ** 2,
                         spike_threshold=s * float(edge_per_scale[row]), num_spikes=int(x.size - n_bulk[row]),
                         D=float(D[row]), loglik=float(loglik[row]), n=x.size, n_dropped=n_dropped,
                         iterations=int(iterations[row])))
    return out
