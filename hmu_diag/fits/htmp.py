"""Fit the HTMP law (Hodgkinson, Wang & Mahoney 2025) to an eigenvalue spectrum: kappa, scale, CI, orientation.

Model (research note htmp.md sec. 2.2-2.4): the ``n`` eigenvalues are those of the finite-N HTMP ensemble, the
beta-Laguerre ensemble with Dyson index ``kappa/n`` and ``M = n/gamma``, scaled to mean ``scale``.  In the
Dumitriu-Edelman bidiagonal model ``T = B B^T`` with independent ``d_i^2 ~ chi2(k_i)``,
``k_i = kappa/gamma - kappa (i-1)/n`` on the diagonal of B and ``t_i^2 ~ chi2(kappa (n-i)/n)`` below it, and
``lambda = eig(T) scale gamma/kappa``.  Two facts make moment estimators exact at finite n:

* ``sum log lambda = log det T + n log c = sum_i log d_i^2 + n log c`` is a sum of independent log-chi-squares;
* ``sum lambda = tr T`` and ``sum lambda^2 = tr T^2`` are polynomials in the independent chi-squares.

Estimators (``method``):

``"moments"`` (default).  Scale = mean eigenvalue (the exact MLE of the scale in the finite-n model).  kappa
solves ``L = g_n(kappa)`` for the scale-free log-moment statistic ``L = log mean(lambda) - mean(log lambda)``:

    g_n(kappa)   = log(kappa/gamma) - (1/n) sum_i [psi(k_i/2) + log 2]     (mean of L, up to O(1/(n kappa)))
    Var_n(kappa) = (1/n^2) sum_i psi'(k_i/2) - 2 gamma/(n kappa)          (delta method, exact chi-square moments)

(the n -> inf limit of g_n is htmp.md sec. 4.3's ``log s - (2/kappa)[lnGamma(s) - lnGamma(delta)]``).  g_n decreases
from +inf (kappa -> 0) to its MP value g_n(inf) = -(1/n) sum log(1 - gamma (i-1)/n); a statistic at or below it
gives kappa = inf.  For gamma > 0.95 the lower tail (density ~ lambda^(delta-1), delta -> 0) makes log lambda
depend on eigenvalues below floating-point resolution, so the second-moment statistic ``R = mean(lambda^2)/mean^2``
is used instead, with ``E_n[R] = n E[tr T^2]/E[tr T]^2 = c0 + c1/kappa`` in closed form (-> 1 + gamma + 2 gamma/kappa;
so kappa = c1/(R - c0) needs no root search) and its standard deviation by the delta method with the exact
covariances of tr T and tr T^2 (closed form, O(1); no eigenvalues).

``"ml"`` / ``"ks"``.  Refinements that start from the moment estimate and minimise, over log kappa (scale kept at
the mean), the negative log-likelihood of the bulk under the limiting density ``hmu_diag.htmp.logpdf`` (``"ml"``)
or the KS distance under ``hmu_diag.htmp.cdf`` (``"ks"``).  Measured on 12 samples each of n = 500 eigenvalues
(tests/test_htmp_fit.py::test_moments_vs_ml_vs_ks), RMSE of log kappa: gamma 0.33, kappa 1: moments 0.059,
ML 0.062, KS 0.094; gamma 0.5, kappa 5.5: moments 0.124, ML 0.098, KS 0.190.  KS is the worst (it looks at one
point of the CDF), so ML is the refinement offered; ML gains ~20% over the log-moment estimator at larger kappa
(none at small kappa, where the log-moment statistic is the Gamma-limit sufficient statistic) but costs 5-20x more
(1.3 s vs 0.23 s and 0.39 s vs 0.06 s per fit under load), which breaks the per-layer budget (the fits must
cost < ~10% of the layer's eigendecomposition).  Hence ``"moments"`` is the default.

Confidence intervals (``ci``): ``"asymptotic"`` inverts the score-type band ``|L - g_n(kappa)| <= z sd_n(kappa)``
(moment CLT under the finite-n model; second-moment statistic: Wald band ``R -+ z sd`` at the estimate);
``"bootstrap"`` is a parametric bootstrap (``n_boot`` samples of the fitted law from ``hmu_diag.htmp.sample``,
refitted with the same estimator, percentile interval).  kappa is reported as ``inf`` (indistinguishable from
Marchenko-Pastur) when the interval's upper end reaches ``KAPPA_MP_EQUIV = 200`` - the authors' code treats
kappa >= 200 as MP (htmp.md sec. 3.2) - and a white Gaussian layer (Dyson index 1, kappa = n) lands there for
n >~ 200.  Both intervals are valid under the finite-n HTMP model; real spectra with GOE-like local statistics
fluctuate less, so for them the intervals are conservative.

Spikes: HTMP has no outlier component.  With ``spikes=True`` the values above the fitted law's upper ``1 - alpha/n``
quantile (MP-like fits: the Tracy-Widom edge) are excluded and the fit repeated until no value of the bulk lies above
it (6 rounds at most; spikes that inflated kappa's tail come out one round after another); their count is
``n_spikes`` (for an inverse fit these are the smallest eigenvalues).  Excluded values stay excluded, as in
iterative sigma clipping (astropy's ``sigma_clip``): re-admitting those below a threshold that moved back up let the
rounds cycle (in 19 of the 216 orientation fits of the zoo's layers, e.g. bulks 116, 109, 113, 115, 116, ... of
127), and the result then depended on where the round limit cut the cycle (kappa 0.20 direct after 6 rounds, 0.32
inverse after 20).

Bounded time: a fit evaluates the law in fit mode (:mod:`hmu_diag.htmp._accuracy`: CDF to ``FIT_CDF_ATOL`` = 1e-4
absolute instead of 1e-10, from tabulated quantiles where the table covers (gamma, kappa), else interpolated across
near-integer delta instead of ODE + mpmath).  mpmath (the last resort
for start values of extreme parameters, e.g. gamma ~ 5e-4 where delta ~ 5e4) runs under ``FIT_MPMATH_LIMITS``; where
the law cannot be evaluated within them, kappa and its CI (which need no evaluation of the law) are still reported,
D and loglik of that orientation are NaN, the spike cutoff falls back to the Gamma-tail quantile (which lies up to
25% above the exact one, so fewer values count as spikes) and an ML/KS refinement keeps the moment estimate.

Goodness of fit: ``D`` is the KS distance of the bulk evaluated at 64 evenly spaced order statistics (all of them
for n <= 64; a lower bound within ~1/64 of the full sup, which keeps the cost of the HTMP CDF fixed; CDF error
< 1e-4), ``loglik`` the binned log-likelihood of :func:`hmu_diag.fits.mp.binned_loglik` on 32 equal-count bins.

Batches: :func:`fit_many` fits many spectra (a model's layers) with the same options at once.  Every step above runs
on all spectra and both orientations together - prefix sums give any bulk's statistics, the g_n tables of all
(gamma, n) pairs are computed in one vectorised call, the roots, thresholds and the tabulated CDF are vectorised over
the laws - so that the per-call overhead of numpy, which is what a small layer's fit costs, is paid once per batch.
Each result is computed element by element and equals the fit of that spectrum alone (:func:`fit` is
``fit_many`` of one spectrum; tested bit for bit).  After the first spike round, the series still peeling evaluate
several candidate bulks per batch (:func:`_fit_orientations`), which gives the same fits in fewer batches.

Orientation: ``"direct"`` fits lambda ~ HTMP; ``"inverse"`` fits 1/lambda ~ HTMP (kernels: NTK, CK, Gauss-Newton;
htmp.md sec. 2.3); ``"auto"`` fits both and keeps the smaller KS distance D.  Tail predictions (htmp.md sec. 3.6):
``delta = kappa (1-gamma)/(2 gamma)``; the HTMP variable's density behaves as ``x^(delta-1)`` near 0
(``pred_lower_exp``) and its inverse has an upper power-law tail with exponent ``pred_alpha = 1 + delta``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from hmu_diag.choices import HTMP_ORIENTATIONS
from hmu_diag.errors import HmuDiagError, OptionError
from hmu_diag.fits._batch import Segments
from hmu_diag.fits._kappa_law import (KAPPA_MIN, kappa_from_stats, kappa_moments, log_stat_moments, log_stat_mp,
                                      moment_statistics, statistic_name)
from hmu_diag.fits._result import FitStatus
from hmu_diag.fits.mp import (MPFit, bin_rows, binned_loglik_rows, clean_many, fit_mp_many, ks_distance, ks_rows,
                              per_matrix_count, tw_threshold)
from hmu_diag.htmp import cdf as htmp_cdf
from hmu_diag.htmp import logpdf as htmp_logpdf
from hmu_diag.htmp import sample as htmp_sample
from hmu_diag.htmp._accuracy import fit_mode
from hmu_diag.htmp._checks import check_gamma
from hmu_diag.htmp._quantile_table import log_quantile_many
from hmu_diag.htmp.density import cdf_sf_many

__all__ = ["HTMPFit", "fit", "fit_many", "kappa_moments", "log_stat_moments", "log_stat_mp", "KAPPA_MP_EQUIV"]

KAPPA_MP_EQUIV = 200.0         # a CI reaching this: kappa reported as inf (indistinguishable from MP)
_MAX_SPIKE_ROUNDS = 6          # fit / exclude outliers rounds (stops as soon as the bulk is unchanged)
_SPECULATIVE_ROWS = 32         # candidate bulks per batch of spike rounds, shared by the series still peeling
_RESCALE_BELOW = 1e-100        # a bulk this far below its series' top gets its moments on its own scale
_N_KS_POINTS = 64              # order statistics at which the HTMP CDF is evaluated for D (module docstring)
_N_BINS = 32                   # equal-count bins of the binned log-likelihood (hmu_diag.fits.mp.bins)
_GUESS_LOWER_BOUND = 0.5                 # the exact threshold is at least this times the guess (measured >= 0.75)
#: multiples of the Gamma-tail guess where the exact sf refines a threshold (it lies within [0.75, 1] times the guess)
_SF_GRID = np.geomspace(_GUESS_LOWER_BOUND, 1.1, 12)

Orientation = Literal["direct", "inverse", "auto"]


@dataclass(frozen=True)
class HTMPFit(FitStatus):
    """Result of :func:`fit`.  ``status`` is "ok" or "failed: <why>" (numbers nan, orientation "").

    kappa          eigenvalue repulsion; ``inf`` when indistinguishable from MP (module docstring)
    kappa_lo/hi    confidence interval at ``ci_level`` (``kappa_hi`` may be inf); ``ci_method`` says how
    scale          sigma^2, mean of the fitted HTMP variable (lambda, or 1/lambda for "inverse")
    orientation    "direct" (lambda ~ HTMP) or "inverse" (1/lambda ~ HTMP)
    delta          kappa (1-gamma)/(2 gamma)
    pred_lower_exp delta - 1: density exponent of the HTMP variable at 0
    pred_alpha     1 + delta: upper-tail power-law exponent of the inverse of the HTMP variable
    D, loglik      KS distance and binned log-likelihood (:func:`hmu_diag.fits.mp.binned_loglik`) of the bulk
    n_spikes       values excluded as outliers above the fitted law (inverse fits: the smallest eigenvalues)
    mp_D, mp_loglik  the same scores of the Marchenko-Pastur fit (:func:`hmu_diag.fits.mp.fit_mp`) of the data
    statistic      "log-moment" or "second-moment"; method: "moments", "ml" or "ks"
    """

    kappa: float
    kappa_lo: float
    kappa_hi: float
    ci_method: str
    ci_level: float
    scale: float
    gamma: float
    orientation: str
    delta: float
    pred_lower_exp: float
    pred_alpha: float
    D: float
    loglik: float
    n_spikes: int
    mp_D: float
    mp_loglik: float
    n: int
    n_dropped: int = 0
    statistic: str = ""
    method: str = "moments"
    status: str = "ok"

    def __repr__(self) -> str:
        if not self.ok:
            return self.failed_repr()
        return (f"HTMPFit(kappa={self.kappa:.4g} [{self.kappa_lo:.3g}, {self.kappa_hi:.3g}], scale={self.scale:.4g}, "
                f"orientation={self.orientation!r}, delta={self.delta:.4g}, D={self.D:.3g} (MP {self.mp_D:.3g}), "
                f"n_spikes={self.n_spikes}, n={self.n})")


# ------------------------------------------------------------------------------------------------ the fit


def _upper_thresholds(gammas: np.ndarray, kappas: np.ndarray, scales: np.ndarray, ns: np.ndarray, n_pers: np.ndarray,
                      alpha: float, y_max: np.ndarray) -> np.ndarray:
    """For each fitted law, a value above which the largest of n draws lies with probability ~alpha (spike cutoff);
    only whether it lies below ``y_max``, the largest value of the bulk, and where, matters to the caller.

    MP-like (kappa >= KAPPA_MP_EQUIV): the Tracy-Widom edge (:func:`hmu_diag.fits.mp.tw_threshold`).  Otherwise the
    1 - alpha/n quantile, read from the tabulated quantiles where they cover the law
    (:func:`hmu_diag.htmp._quantile_table.log_quantile_many`; |logit F| off by < 3e-4 at the thresholds, i.e. sf
    within 0.03% relative).  Elsewhere the quantile of the Gamma-type upper tail (htmp.md sec. 3.6, shape s + a =
    kappa(1+gamma)/(2 gamma), rate theta = kappa/(2 gamma scale)) bounds it from above: the exact quantile lies
    within [0.75, 1] times it (measured with the exact law over gamma 0.005-1, kappa 0.005-190, n 10-10^4), so it
    is refined (log sf, evaluated in fit mode, interpolated linearly in log x on a geometric grid below it: sf at
    the result within ~10% of alpha/n) only where ``y_max`` exceeds ``_GUESS_LOWER_BOUND`` times it, and stays
    otherwise.  (Taking this bound for the threshold wherever y_max lay
    below it, as before, let values between the two pass as bulk: up to 3 of 64 in a MobileNetV2 layer.)
    """
    out = np.empty(gammas.size)
    mp_like = kappas >= KAPPA_MP_EQUIV
    if mp_like.any():
        out[mp_like] = tw_threshold(scales[mp_like], gammas[mp_like], n_pers[mp_like], alpha=alpha)
    rows = np.flatnonzero(~mp_like)
    if rows.size == 0:
        return out
    log_x = log_quantile_many(np.log(ns[rows] / alpha - 1.0), gammas[rows], kappas[rows])     # logit(1 - alpha/n)
    tabulated = np.isfinite(log_x)
    out[rows[tabulated]] = scales[rows[tabulated]] * np.exp(log_x[tabulated])
    rows = rows[~tabulated]
    if rows.size == 0:
        return out
    kappa, gamma, scale = kappas[rows], gammas[rows], scales[rows]
    a, s_ = kappa / 2.0, kappa / (2.0 * gamma)
    log_target = np.log(alpha / ns[rows])
    log_c = special.gammaln(s_ + a) - special.gammaln(1.0 + a) - special.gammaln(s_)
    q = np.exp(np.minimum(log_target - log_c, 0.0))
    guess = np.maximum(special.gammainccinv(s_ + a, q) / (s_ / scale), scale)
    out[rows] = guess
    exact = np.flatnonzero(y_max[rows] > _GUESS_LOWER_BOUND * guess)
    if exact.size == 0:
        return out
    grids = guess[exact, None] * _SF_GRID                # laws the table does not cover: log sf on a grid
    _, sf, evaluable = cdf_sf_many(grids, gamma[exact], kappa[exact], scale[exact])
    with np.errstate(divide="ignore"):
        log_sf = np.log(sf)
    target = log_target[exact]
    for k in np.flatnonzero(evaluable).tolist():          # not evaluable within the fit's limits: the guess stays
        ok = np.isfinite(log_sf[k])
        if ok.sum() < 2 or not (log_sf[k][ok][0] >= target[k] >= log_sf[k][ok][-1]):
            continue
        out[rows[exact[k]]] = math.exp(float(np.interp(-target[k], -log_sf[k][ok], np.log(grids[k][ok]))))
    return out


def _refine(y: np.ndarray, gamma: float, kappa0: float, lo: float, hi: float, method: str) -> float:
    """Minimise the negative log-likelihood (``"ml"``) or KS distance (``"ks"``) over log kappa, scale = mean(y)."""
    if math.isinf(lo):                                    # even the lower band is MP: nothing to refine
        return kappa0
    scale = float(np.mean(y))
    n = y.size
    u_lo = math.log(max(lo, KAPPA_MIN)) - 0.5
    u_hi = math.log(min(hi if math.isfinite(hi) else 10 * KAPPA_MP_EQUIV, 10 * KAPPA_MP_EQUIV)) + 0.5
    from scipy import optimize         # imported on first use: the default moment fit needs no optimiser
    if method == "ml":
        obj = lambda u: -float(np.sum(htmp_logpdf(y, gamma, math.exp(u), scale)))  # noqa: E731
    else:
        obj = lambda u: ks_distance(htmp_cdf(y, gamma, math.exp(u), scale), n)  # noqa: E731
    try:
        res = optimize.minimize_scalar(obj, bounds=(u_lo, u_hi), method="bounded", options={"xatol": 1e-3})
    except HmuDiagError:          # the law cannot be evaluated within the fit's limits: keep the moment estimate
        return kappa0
    return math.exp(res.x) if math.isfinite(kappa0) or res.x < u_hi - 0.6 else kappa0


@dataclass(frozen=True)
class _SeriesFits:
    """:func:`_fit_orientations`' fits of many series, one entry per series: kappa, its band (lo, hi), scale, the KS
    distance D and binned log-likelihood of the bulk, and the bulk's size (its first ``bulk`` values)."""

    kappa: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray
    D: np.ndarray
    loglik: np.ndarray
    bulk: np.ndarray


def _scaled(series: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top, x, log x, x^2) with x = y/top per series (top = its largest value): scale-free statistics, no overflow
    for inverse spectra (1/lambda ~ 1e300)."""
    top = series.values[series.starts + series.sizes - 1]
    x = series.values / series.per_element(top, 1.0)
    return top, x, np.log(x), x * x


def _bulk_moments(series: Segments, scaled: tuple[np.ndarray, ...], rows: np.ndarray,
                  lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, mean log, mean square) of x = y/c over the bulk y[:lengths[k]] of series ``rows[k]``, and c: prefix sums
    of :func:`_scaled`'s arrays (c = the series' largest value).  A bulk whose largest value lies below
    ``_RESCALE_BELOW`` of it (spikes spanning hundreds of decades, e.g. 1/lambda of a square HTMP sample) would lose
    its squares or means to underflow: its moments are recomputed with c = its own largest value."""
    top, x, log_x, x_sq = scaled
    sums = series.prefix_reduce([x, log_x, x_sq], rows, lengths)
    m1, mean_log, mean_sq = (total / lengths for total in sums)
    c = top[rows]
    ends = series.starts[rows] + lengths
    for k in np.flatnonzero(x[ends - 1] < _RESCALE_BELOW).tolist():
        y = series.values[series.starts[rows[k]]:ends[k]]
        c[k] = y[-1]
        rel = y / c[k]
        m1[k], mean_log[k], mean_sq[k] = np.mean(rel), np.mean(np.log(y) - math.log(c[k])), np.mean(rel * rel)
    return m1, mean_log, mean_sq, c


def _count_at_most(series: Segments, rows: np.ndarray, lengths: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the first ``lengths[k]`` values of series ``rows[k]`` are <= ``thresholds[k]`` (lengths >= 1)."""
    ends = np.cumsum(lengths)
    element = np.arange(ends[-1]) + np.repeat(series.starts[rows] - (ends - lengths), lengths)
    below = series.values[element] <= np.repeat(thresholds, lengths)
    return np.add.reduceat(below, ends - lengths, dtype=np.intp)


def _fit_orientations(ys: list[np.ndarray], gammas: np.ndarray, n_pers: np.ndarray, *, spikes: bool, alpha: float,
                      level: float, method: str) -> _SeriesFits:
    """Fit HTMP to each sorted positive series ``ys[i]`` (one orientation each), excluding outliers above the fitted
    law; all series go through the spike rounds together, each leaving as soon as its bulk no longer changes.

    A round maps a bulk size b to the size F(b) of the part of y[:b] at or below the threshold of the law fitted to
    y[:b].  After the first round the series still peeling share ``_SPECULATIVE_ROWS`` rows: each evaluates F at
    b, b - 1, ..., b - w + 1 in one batch and follows b -> F(b) -> F(F(b)) -> ... for as long as the chain stays
    among them, so that a series that peels a few values per round needs one batch for several rounds.  Every row
    is computed element by element, so this gives exactly the fits of one round at a time, in fewer numpy calls."""
    series = Segments(ys)
    scaled = _scaled(series)
    bulk = series.sizes.copy()
    kappa, lo, hi, scale = (np.empty(len(ys)) for _ in range(4))
    fitted = np.zeros(len(ys), dtype=np.intp)             # rounds fitted per series
    rounds = _MAX_SPIKE_ROUNDS if spikes else 1
    active = np.arange(len(ys))
    width = np.ones(len(ys), dtype=np.intp)               # candidate bulks per series in the next batch
    while active.size:
        w = width[active]
        first = np.cumsum(w) - w                          # each series' first row
        rows = np.repeat(active, w)
        lengths = bulk[rows] - (np.arange(rows.size) - np.repeat(first, w))
        m1, mean_log, mean_sq, c = _bulk_moments(series, scaled, rows, lengths)
        k, kl, kh = kappa_from_stats(moment_statistics(m1, mean_log, mean_sq, gammas[rows]), gammas[rows], lengths,
                                     level=level)
        if method != "moments":                           # one row per series (width 1)
            k = np.array([_refine(ys[i][:b], float(gammas[i]), float(k[j]), float(kl[j]), float(kh[j]), method)
                          for j, (i, b) in enumerate(zip(rows.tolist(), lengths.tolist()))])
        row_scale = m1 * c
        keep = lengths.copy()                             # F(b); a series' last round keeps its bulk
        test = np.flatnonzero(fitted[rows] + 1 < rounds)
        if test.size:
            r, b = rows[test], lengths[test]
            thr = _upper_thresholds(gammas[r], np.where(kh[test] < KAPPA_MP_EQUIV, k[test], math.inf),
                                    row_scale[test], b, n_pers[r], alpha, series.values[series.starts[r] + b - 1])
            # counted within the bulk: an excluded value stays excluded, even where the threshold moves back up
            keep[test] = np.maximum(_count_at_most(series, r, b, thr), 10)
        going = np.zeros(active.size, dtype=bool)         # moved past its candidates: another batch
        step = np.zeros(active.size, dtype=np.intp)       # candidate index along each chain
        live = np.arange(active.size)
        while live.size:
            s, r = active[live], first[live] + step[live]
            kappa[s], lo[s], hi[s], scale[s] = k[r], kl[r], kh[r], row_scale[r]
            fitted[s] += 1
            moved = (keep[r] != lengths[r]) & (fitted[s] < rounds)
            bulk[s[moved]] = keep[r[moved]]
            step[live] += lengths[r] - keep[r]
            going[live[moved & (step[live] >= w[live])]] = True
            live = live[moved & (step[live] < w[live])]
        active = active[going]
        share = max(_SPECULATIVE_ROWS // max(active.size, 1), 1) if method == "moments" else 1
        width[active] = np.where(fitted[active] + 1 < rounds, np.minimum(share, bulk[active] - 9), 1)
    D, loglik = _goodness_of_fit(series, bulk, gammas, np.where(hi >= KAPPA_MP_EQUIV, math.inf, kappa), scale)
    return _SeriesFits(kappa, lo, hi, scale, D, loglik, bulk)


def _goodness_of_fit(series: Segments, bulk: np.ndarray, gammas: np.ndarray, kappas: np.ndarray,
                     scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS distance D and binned log-likelihood of each series' bulk ``y[:bulk[i]]`` under its fitted law, all at once:
    D over ``_N_KS_POINTS`` evenly spaced order statistics (:func:`hmu_diag.fits.mp.ks_rows`), the log-likelihood on
    the equal-count bins of :func:`hmu_diag.fits.mp.bin_rows`.  NaN for a law that cannot be evaluated within the
    fit's limits."""
    n = bulk.astype(np.float64)[:, None]
    n_points = np.minimum(bulk, _N_KS_POINTS)[:, None]
    column = np.arange(_N_KS_POINTS)
    spacing = (n - 1.0) / np.maximum(n_points - 1.0, 1.0)
    ranks = np.where(column == n_points - 1, n - 1.0, np.rint(column * spacing))      # np.linspace(0, n-1, R).round()
    used = column < n_points
    ranks = np.where(used, ranks, 0.0).astype(np.intp)
    edges, counts, inner = bin_rows(series.values, series.starts, bulk, _N_BINS)
    points = np.concatenate([series.values[series.starts[:, None] + ranks], edges], axis=1)
    F, _, evaluable = cdf_sf_many(points, gammas, kappas, scales)
    D = ks_rows(F[:, :_N_KS_POINTS], ranks, bulk, used)
    loglik = binned_loglik_rows(counts, F[:, _N_KS_POINTS:], inner)
    return np.where(evaluable, D, math.nan), np.where(evaluable, loglik, math.nan)


def _bootstrap_ci(kappa: float, scale: float, n: int, gamma: float, *, n_boot: int, seed: int, level: float,
                  method: str) -> tuple[float, float]:
    """Percentile interval of kappa refitted to ``n_boot`` samples of n values of the fitted law HTMP(gamma, kappa,
    scale) (:func:`hmu_diag.htmp.sample`)."""
    rng = np.random.default_rng(seed)
    est = np.empty(n_boot)
    for b in range(n_boot):
        y = htmp_sample(n, gamma, kappa, scale, rng=rng)
        y = y[y > 0]
        k, lo, hi, _ = kappa_moments(y, gamma, level=level)
        est[b] = _refine(y, gamma, k, lo, hi, method) if method != "moments" else k
    q = np.quantile(np.log(est), [(1 - level) / 2, (1 + level) / 2])
    return float(np.exp(q[0])), float(np.exp(q[1]))


def _failed(gamma: float, why: str, n: int, n_dropped: int, ci: str, level: float, mp_D: float = math.nan,
            mp_loglik: float = math.nan) -> HTMPFit:
    nan = math.nan
    return HTMPFit(nan, nan, nan, ci, level, nan, gamma, "", nan, nan, nan, nan, nan, 0, mp_D, mp_loglik, n,
                   n_dropped, status=f"failed: {why}")


def fit(evals, gamma: float, orientation: Orientation = "auto", *, spikes: bool = True,
        ci: Literal["asymptotic", "bootstrap"] = "asymptotic", n_boot: int = 200, seed: int = 0, level: float = 0.95,
        method: Literal["moments", "ml", "ks"] = "moments", alpha: float = 0.01, n_matrices: int = 1,
        mp: MPFit | None = None) -> HTMPFit:
    """Fit HTMP(gamma, kappa, scale) to an eigenvalue spectrum (formulas and choices: module docstring).

    Parameters
    ----------
    evals : array-like
        Eigenvalues of the smaller Gram (raw units).  Zeros, negatives and non-finite values are dropped
        (``n_dropped``); ``n_matrices`` pooled matrices contribute ``len(evals)/n_matrices`` each.
    gamma : float
        Aspect ratio M/N in (0, 1] (smaller over larger dimension).
    orientation : {"auto", "direct", "inverse"}
        "direct": lambda ~ HTMP; "inverse": 1/lambda ~ HTMP; "auto": both, the smaller KS distance wins.
    spikes : bool
        Exclude outliers above the fitted law (reported as ``n_spikes``).
    ci : {"asymptotic", "bootstrap"}
        Moment CLT under the finite-n model (fast), or parametric bootstrap with ``n_boot`` refits (~0.2 s each at
        n = 768).  ``level``: coverage of the interval.
    method : {"moments", "ml", "ks"}
        Point estimator: log-/second-moment (default, fast), or its refinement by ML or KS on the bulk.
    alpha : float
        Size of the spike test (MP Tracy-Widom edge and the HTMP 1 - alpha/n quantile).
    mp : MPFit, optional
        :func:`hmu_diag.fits.mp.fit_mp` of the same eigenvalues, if already computed (its D and loglik are
        reported); computed here otherwise.

    Returns an :class:`HTMPFit`; never raises on data (``status="failed: ..."``: fewer than 10 positive values or
    all equal), raises :class:`OptionError` on invalid options.  :func:`fit_many` fits many spectra at once.
    """
    return fit_many([evals], [gamma], orientation, spikes=spikes, ci=ci, n_boot=n_boot, seed=seed, level=level,
                    method=method, alpha=alpha, n_matrices=[n_matrices], mps=[mp])[0]


def fit_many(evals_list: Sequence, gammas: Sequence[float], orientation: Orientation = "auto", *,
             spikes: bool = True, ci: Literal["asymptotic", "bootstrap"] = "asymptotic", n_boot: int = 200,
             seed: int = 0, level: float = 0.95, method: Literal["moments", "ml", "ks"] = "moments",
             alpha: float = 0.01, n_matrices: Sequence[int] | None = None,
             mps: Sequence[MPFit | None] | None = None) -> list[HTMPFit]:
    """:func:`fit` of many spectra with the same options: ``fit_many(E, G, ...)[i]`` is ``fit(E[i], G[i], ...)``, with
    ``n_matrices[i]`` and ``mps[i]`` (defaults 1 and None) per spectrum.

    The spike rounds, kappa roots, thresholds and CDF evaluations of every spectrum and orientation run as one batch
    of array operations: the cost of a small layer's fit is numpy's per-call overhead, so a model's layers fitted
    together cost little more than one.  Each result is computed element by element, independent of the others in
    the batch.  Raises :class:`OptionError` on invalid options or an invalid gamma.
    """
    if orientation not in HTMP_ORIENTATIONS:
        raise OptionError(f"htmp.fit: orientation must be 'auto', 'direct' or 'inverse', got {orientation!r}")
    if ci not in ("asymptotic", "bootstrap"):
        raise OptionError(f"htmp.fit: ci must be 'asymptotic' or 'bootstrap', got {ci!r}")
    if method not in ("moments", "ml", "ks"):
        raise OptionError(f"htmp.fit: method must be 'moments', 'ml' or 'ks', got {method!r}")
    if not 0.0 < level < 1.0 or not 0.0 < alpha < 1.0:
        raise OptionError(f"htmp.fit: level and alpha must lie in (0, 1), got level={level!r}, alpha={alpha!r}")
    if ci == "bootstrap" and int(n_boot) < 10:
        raise OptionError(f"htmp.fit: n_boot must be >= 10 for a bootstrap CI, got {n_boot!r}")
    count = len(evals_list)
    n_matrices = [1] * count if n_matrices is None else list(n_matrices)
    mps = [None] * count if mps is None else list(mps)
    if len(gammas) != count or len(n_matrices) != count or len(mps) != count:
        raise OptionError("htmp.fit_many: evals_list, gammas, n_matrices and mps must have one entry per spectrum")
    ci_name = "bootstrap" if ci == "bootstrap" else "asymptotic"
    results: list[HTMPFit | None] = [None] * count
    batch = []                            # (index, cleaned values, gamma, n_dropped)
    for i, (gamma, (x, n_dropped)) in enumerate(zip(gammas, clean_many(evals_list, "htmp.fit"))):
        g = check_gamma(gamma, "htmp.fit")
        if x.size < 10:
            results[i] = _failed(g, f"fewer than 10 positive eigenvalues ({x.size})", x.size, n_dropped, ci_name, level)
        elif x[-1] <= x[0] * (1.0 + 1e-9):
            results[i] = _failed(g, "all eigenvalues equal", x.size, n_dropped, ci_name, level)
        else:
            batch.append((i, x, g, n_dropped))
    if batch:
        with np.errstate(all="ignore"), fit_mode():
            fitted = _fit_batch(batch, orientation, spikes=spikes, ci=ci_name, n_boot=int(n_boot), seed=seed,
                                level=level, method=method, alpha=alpha, n_matrices=n_matrices, mps=mps)
        for (i, *_), result in zip(batch, fitted):
            results[i] = result
    return results


def _fit_batch(batch: list[tuple[int, np.ndarray, float, int]], orientation: str, *, spikes: bool, ci: str,
               n_boot: int, seed: int, level: float, method: str, alpha: float, n_matrices: list[int],
               mps: list[MPFit | None]) -> list[HTMPFit]:
    """:func:`fit_many` on validated, cleaned spectra ``(index, values, gamma, n_dropped)``."""
    sides = [o for o in ("direct", "inverse") if orientation in ("auto", o)]
    missing = [j for j, (i, *_) in enumerate(batch) if mps[i] is None]     # MP fits not passed in: one batch too
    fitted_mp = dict(zip(missing, fit_mp_many([batch[j][1] for j in missing], [batch[j][2] for j in missing],
                                              spikes=spikes, alpha=alpha,
                                              n_matrices=[n_matrices[batch[j][0]] for j in missing])))
    series, gammas, n_pers = [], [], []
    for i, x, g, n_dropped in batch:
        n_per = per_matrix_count(x.size, n_dropped, n_matrices[i])
        for side in sides:
            series.append(x if side == "direct" else (1.0 / x)[::-1])     # x ascending: 1/x descending
            gammas.append(g)
            n_pers.append(n_per)
    fits = _fit_orientations(series, np.array(gammas), np.array(n_pers), spikes=spikes, alpha=alpha, level=level,
                             method=method)
    D = fits.D.reshape(len(batch), len(sides))
    # the smaller D wins (a NaN D loses; a tie: the first side); one row per spectrum from here on
    pick = np.argmin(np.where(np.isfinite(D), D, np.inf), axis=1)
    row = np.arange(len(batch)) * len(sides) + pick
    kappas, los, his, scales, Ds, logliks, bulks = (getattr(fits, name)[row].tolist() for name in
                                                    ("kappa", "lo", "hi", "scale", "D", "loglik", "bulk"))
    picks = pick.tolist()
    out = []
    for j, (i, x, g, n_dropped) in enumerate(batch):
        mp = fitted_mp.get(j, mps[i])
        kappa, lo, hi = kappas[j], los[j], his[j]
        if ci == "bootstrap":
            lo, hi = _bootstrap_ci(kappa if hi < KAPPA_MP_EQUIV else math.inf, scales[j], bulks[j], g, n_boot=n_boot,
                                   seed=seed, level=level, method=method)
        if hi >= KAPPA_MP_EQUIV or kappa >= KAPPA_MP_EQUIV:
            kappa, hi = math.inf, math.inf
        delta = kappa * (1.0 - g) / (2.0 * g) if g < 1.0 else 0.0
        statistic = statistic_name(g)
        out.append(HTMPFit(kappa=kappa, kappa_lo=lo, kappa_hi=hi, ci_method=f"{ci} ({statistic})", ci_level=level,
                           scale=scales[j], gamma=g, orientation=sides[picks[j]], delta=delta,
                           pred_lower_exp=delta - 1.0, pred_alpha=1.0 + delta, D=Ds[j], loglik=logliks[j],
                           n_spikes=x.size - bulks[j], mp_D=mp.D, mp_loglik=mp.loglik, n=x.size, n_dropped=n_dropped,
                           statistic=statistic, method=method))
    return out
