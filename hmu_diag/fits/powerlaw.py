"""Continuous power-law fit of a spectrum's tail (Clauset, Shalizi & Newman 2009), exact and fast.

Model: p(x) = ((alpha-1)/x_min) (x/x_min)^(-alpha) for x >= x_min (CSN eq. 2.2).  At every x_min
candidate the exponent is fitted by maximum likelihood, alpha_hat = 1 + k / sum_{x_i >= x_min} ln(x_i/x_min)
(CSN eq. 3.1, k = tail size), and x_min is the candidate minimising the Kolmogorov-Smirnov distance D
between the tail's empirical CDF and the fitted CDF 1 - (x/x_min)^(1-alpha) (CSN sec. 3.3).  The standard
error is sigma = (alpha-1)/sqrt(k).

``method="powerlaw"`` (default) reproduces ``powerlaw.Fit(x, parameter_ranges={"alpha": list(alpha_range)})``
of powerlaw 2.0.0 (Alstott et al. 2014), i.e. exactly what that package computes, quirks included:

* candidates: every distinct value except the two largest;
* D: the empirical CDF is the left limit, #{x < u}/n, renormalised to the tail, evaluated at the distinct
  values of the tail only (so D can be up to 1/k smaller than the textbook two-sided sup);
* alpha: the closed form when it lies in (1.5, 3]; otherwise scipy's Nelder-Mead (tol 1e-4, bounds
  ``alpha_range``) started at the closed form.  That start is already the MLE, so the optimiser ends on it
  (to 1 ulp) inside the range and next to the bound outside it; we use these two facts directly
  (:func:`_powerlaw_alpha`; the tests replay scipy's Nelder-Mead step for step to check them);
* valid candidates: lo < alpha < hi, and for Nelder-Mead ones also lo + 0.01 <= alpha <= hi - 0.01 (powerlaw's
  "near the boundary" flag); x_min = argmin D over valid candidates (lowest on ties).  Where powerlaw would
  fall back to the argmin over *invalid* candidates, we report ``status="failed: ..."``.

``method="ww"`` reproduces WeightWatcher 0.7.7 ``WW_powerlaw.WWFit`` (its default ``pl_package="ww"``): every
data point except the largest is a candidate (ties included, point by point), alpha is always the closed
form with no range, D uses the lower ECDF step j/k at every tail point, and candidates with alpha <= 1 are
skipped (WW gives them D = 1, which cannot beat a real candidate).  Below 20 values WW's "small N" rule
applies (see :func:`_ww_small_n`).  ``n_tail`` counts all values >= x_min (WW's ``len(fit.data)``, which in
WW's small-N path can disagree with its own x_min).

The whole scan is vectorised: suffix sums give every candidate's alpha in O(n) after the sort, and the
argmin of D is exact but pruned with lower bounds (:mod:`hmu_diag.fits._ks_scan`), so typically only 1-7 %
of the O(n^2) KS work is done.  :func:`compare_power_law` adds likelihood-ratio tests against exponential,
stretched-exponential, lognormal and truncated-power-law tails (:mod:`hmu_diag.fits._compare`).
"""
from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from hmu_diag.errors import OptionError
from hmu_diag.fits._batch import Segments
from hmu_diag.fits._compare import ALTERNATIVES, LikelihoodRatio, compare_tail
from hmu_diag.fits._ks_scan import ks_argmins, ks_distances
from hmu_diag.fits._nelder_mead import nelder_mead_1d
from hmu_diag.fits._result import FitStatus
from hmu_diag.fits._truncated import truncated_mle, truncated_stderr
from hmu_diag.fits._values import positive_sorted, positive_sorted_many

__all__ = [
    "PowerLawFit", "PowerLawScan", "LikelihoodRatio", "fit_power_law", "fit_power_law_many", "fit_power_law_ww",
    "power_law_scan",
    "esd_peak", "compare_power_law",
]

Method = Literal["powerlaw", "ww"]
FixFingers = Literal["xmin_peak", "clip_xmax"] | None

_LOG_TINY = math.log(10.0 ** -307)   # powerlaw's floor for a zero likelihood (10**sys.float_info.min_10_exp)
_NM_CLOSED_FORM = (1.5, 3.0)         # powerlaw 2.0.0 uses the closed form only for alpha0 in (1.5, 3]
_WW_SMALL_N = 20                     # WWFit switches to fit_powerlaw_smallN below this many values
_WW_SMALL_N_KMIN = 8
_FLAT_SPREAD = 1e-9                  # max/min - 1 below this: a flat spectrum, refused (rounding noise is no tail)
_REPLAY_ALL = False                  # tests: replay scipy's Nelder-Mead instead of the shortcut it justifies


@dataclass(frozen=True)
class PowerLawFit(FitStatus):
    """Result of :func:`fit_power_law`.  Failed fits have ``status="failed: <why>"`` and nan numbers.

    alpha      fitted exponent of the density p(x) ~ x^-alpha (after ``fix_fingers``)
    xmin       lower end of the fitted tail (same units as the input)
    xmax       upper end of the fitted tail: the ``xmax`` option when given (truncated likelihood), otherwise
               the largest value used (after any ``clip_xmax`` removal)
    D          Kolmogorov-Smirnov distance of the tail (see module docstring for the convention)
    sigma      standard error of alpha: (alpha-1)/sqrt(n_tail) (truncated fits: 1/sqrt(n_tail Var[ln x]))
    n_tail     number of values in [xmin, xmax]
    n          number of positive finite values used (after clipping fingers); ``n_dropped`` were not
    p_value    CSN semi-parametric bootstrap goodness-of-fit p (nan unless ``n_boot > 0``)
    num_fingers  number of top values removed by ``fix_fingers="clip_xmax"`` (0 otherwise)
    raw_alpha  alpha before ``clip_xmax`` (equal to alpha otherwise)
    n_candidates number of x_min candidates scanned
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int
    n: int
    status: str = "ok"
    p_value: float = math.nan
    num_fingers: int = 0
    raw_alpha: float = math.nan
    n_dropped: int = 0
    n_candidates: int = 0
    truncated: bool = False
    method: str = "powerlaw"
    fix_fingers: str | None = None

    def __repr__(self) -> str:
        if not self.ok:
            return self.failed_repr()
        extra = f", num_fingers={self.num_fingers}, raw_alpha={self.raw_alpha:.4g}" if self.num_fingers else ""
        p = "" if math.isnan(self.p_value) else f", p_value={self.p_value:.3g}"
        return (f"PowerLawFit(alpha={self.alpha:.4g}, xmin={self.xmin:.4g}, xmax={self.xmax:.4g}, D={self.D:.4g}, "
                f"sigma={self.sigma:.3g}, n_tail={self.n_tail}, n={self.n}{p}{extra})")


@dataclass(frozen=True)
class PowerLawScan:
    """Per-candidate results of the x_min scan (:func:`power_law_scan`): the D(x_min) and alpha(x_min) curves.

    ``alpha`` and ``D`` of invalid candidates are those of the closed-form alpha (powerlaw reports its
    optimiser's end point near the range boundary there)."""

    xmin: np.ndarray
    alpha: np.ndarray
    D: np.ndarray
    n_tail: np.ndarray
    valid: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------------------------- input


def _check_options(alpha_range, xmin, xmax, xmin_range, min_tail, fix_fingers, method, estimator):
    lo, hi = (float(v) for v in alpha_range)
    if not (1.0 <= lo < hi):
        raise OptionError(f"alpha_range={alpha_range!r}: need 1 <= low < high "
                          "(a power law without x_max needs alpha > 1)")
    if method not in ("powerlaw", "ww"):
        raise OptionError(f"method={method!r}: expected 'powerlaw' or 'ww'")
    if estimator not in ("powerlaw", "mle"):
        raise OptionError(f"estimator={estimator!r}: expected 'powerlaw' or 'mle'")
    if fix_fingers not in (None, "xmin_peak", "clip_xmax"):
        raise OptionError(f"fix_fingers={fix_fingers!r}: expected None, 'xmin_peak' or 'clip_xmax'")
    if xmin is not None and (xmin_range is not None or fix_fingers == "xmin_peak"):
        raise OptionError("xmin is fixed: xmin_range and fix_fingers='xmin_peak' do not apply")
    if fix_fingers == "xmin_peak" and xmin_range is not None:
        raise OptionError("fix_fingers='xmin_peak' sets the x_min window itself: drop xmin_range")
    if fix_fingers is not None and xmax is not None:
        raise OptionError(f"fix_fingers={fix_fingers!r} cannot be combined with a fixed xmax")
    if method == "ww" and (xmax is not None or xmin is not None or xmin_range is not None or min_tail is not None
                           or fix_fingers == "xmin_peak"):
        raise OptionError("method='ww' reproduces WWFit's plain scan: xmin, xmax, xmin_range, min_tail and "
                          "fix_fingers='xmin_peak' are not available with it")
    if xmin is not None and not (np.isfinite(xmin) and xmin > 0):
        raise OptionError(f"xmin={xmin!r}: must be a positive finite number")
    if xmax is not None and not (np.isfinite(xmax) and xmax > 0):
        raise OptionError(f"xmax={xmax!r}: must be a positive finite number")
    if xmin is not None and xmax is not None and not xmin < xmax:
        raise OptionError(f"xmin={xmin!r} must be below xmax={xmax!r}")
    if xmin_range is not None:
        a, b = xmin_range
        if not a <= b:
            raise OptionError(f"xmin_range={xmin_range!r}: need low <= high")
    if min_tail is not None and (int(min_tail) != min_tail or min_tail < 2):
        raise OptionError(f"min_tail={min_tail!r}: must be an integer >= 2")
    return lo, hi


# ------------------------------------------------------------------------------------ the x_min scan


@dataclass
class _Scan:
    """Everything the argmin, the curve and the bootstrap need: evaluation points and candidates."""

    t: np.ndarray        # log of evaluation points
    c: np.ndarray        # points strictly below each evaluation point
    n: int
    pos: np.ndarray      # candidate -> first evaluation point of its tail
    t0: np.ndarray       # log x_min per candidate
    c0: np.ndarray       # points below x_min per candidate
    k: np.ndarray        # tail size per candidate
    alpha: np.ndarray
    valid: np.ndarray
    scale: np.ndarray | None
    sigma: np.ndarray


@dataclass(frozen=True)
class _Settings:
    """The options shared by every fit of a batch (validated by :func:`_check_options`)."""

    lo: float
    hi: float
    xmin: float | None = None
    xmax: float | None = None
    min_tail: int | None = None
    method: str = "powerlaw"
    estimator: str = "powerlaw"
    fix_fingers: str | None = None


def _powerlaw_alpha(k, lam, t0, lo, hi, estimator):
    """powerlaw 2.0.0's per-candidate alpha and validity.

    powerlaw runs Nelder-Mead (tol 1e-4, bounds (lo, hi)) from the closed form alpha0 when alpha0 is not in
    (1.5, 3].  That start is the exact minimiser of the negative log-likelihood, and Nelder-Mead only ever
    replaces its best point by a strictly smaller value, so:
      * lo < alpha0 < hi: it ends on alpha0 (measured: never more than 1 ulp away in 1.5e5 random problems)
        and the candidate is valid iff alpha0 is at least 0.01 inside the range;
      * alpha0 outside the range: it starts on the bound and ends within 2e-4 of it (measured on 3e5 random
        problems), which powerlaw flags as "near the boundary", i.e. invalid.
    Both facts are re-checked by the tests, which replay scipy's Nelder-Mead step for step
    (:mod:`hmu_diag.fits._nelder_mead`, switched on by ``_REPLAY_ALL``).  Invalid candidates report alpha0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + k / lam
    valid = (alpha > lo) & (alpha < hi)
    if estimator == "mle":
        return alpha, valid
    nm = ~((alpha > _NM_CLOSED_FORM[0]) & (alpha <= _NM_CLOSED_FORM[1])) & np.isfinite(alpha)
    if not _REPLAY_ALL:
        valid[nm] &= (alpha[nm] - 0.01 >= lo) & (alpha[nm] + 0.01 <= hi)
        return alpha, valid
    kk, ll, tt = k[nm], lam[nm], t0[nm]

    def nll(a, idx):   # -sum log pdf, pdf = (a-1) x_min^(a-1) x^-a; powerlaw's floor outside the range
        with np.errstate(divide="ignore", invalid="ignore"):
            v = -kk[idx] * np.log(a - 1.0) + a * ll[idx] + kk[idx] * tt[idx]
        return np.where((a > lo) & (a < hi), v, -kk[idx] * _LOG_TINY)

    a_nm, ok = nelder_mead_1d(nll, alpha[nm], lo, hi, tol=1e-4)
    alpha[nm] = a_nm
    valid[nm] = ok & (a_nm > lo) & (a_nm < hi) & (a_nm - 0.01 >= lo) & (a_nm + 0.01 <= hi)
    return alpha, valid


def _build_scans(xs: Sequence[np.ndarray], windows: Sequence[tuple[float, float] | None], s: _Settings
                 ) -> list[_Scan | str]:
    """The scan of each sorted positive array (at least 2 values; ``windows[i]``: its x_min window or None); a
    string says why there is nothing to scan.

    All arrays are processed as one batch (stored back to back, :class:`~hmu_diag.fits._batch.Segments`): every
    quantity is computed element by element with the operations a single array would get (the suffix sums run array
    by array), so a scan does not depend on the other arrays.
    """
    series = Segments(xs)
    sizes, starts = series.sizes, series.starts
    size_list = sizes.tolist()
    x = series.values[:-1]                                              # (without the sentinel)
    lx = np.log(x)
    lx0 = lx[starts]
    # suffix sums of ln x - ln x_0 (subtracting ln x_0 limits cancellation): S[s] = sum_{i >= s}
    shifted = lx - np.repeat(lx0, sizes)
    S = np.empty(x.size)
    for a, size in zip(starts.tolist(), size_list):
        S[a:a + size] = np.cumsum(shifted[a:a + size][::-1])[::-1]
    local = series.position[:-1]                                        # index inside its own array
    if s.method == "ww":           # evaluation points: every value; candidates: all but the largest
        points, counts, spare = np.arange(x.size), sizes, 1
    else:                          # evaluation points: the distinct values; candidates: all but the two largest
        new = np.ones(x.size, dtype=bool)
        np.not_equal(x[1:], x[:-1], out=new[1:])
        new[starts] = True
        points = np.flatnonzero(new)
        counts, spare = np.add.reduceat(new, starts), 2
    t, c = lx[points], local[points].astype(np.float64)
    count_list = counts.tolist()
    point_starts = np.array([0, *itertools.accumulate(count_list[:-1])], dtype=np.intp)
    owner = np.repeat(np.arange(sizes.size), counts)
    rank = np.arange(points.size) - point_starts[owner]
    why: list[str | None] = [None] * sizes.size
    if s.method != "ww":
        for i, count in enumerate(count_list):
            if count < 4:
                why[i] = f"fewer than 4 distinct values ({count}): powerlaw needs 2 x_min candidates"
    candidate = rank < counts[owner] - spare
    candidate &= counts[owner] >= (1 if s.method == "ww" else 4)
    f0 = c[candidate].astype(np.intp)
    seg = owner[candidate]
    pos = rank[candidate]
    k = (sizes[seg] - f0).astype(np.float64)
    t0 = t[candidate]
    lam = S[starts[seg] + f0] - k * (t0 - lx0[seg])          # sum over the tail of ln(x/x_min)
    if s.min_tail is not None or any(w is not None for w in windows):
        keep = np.ones(pos.size, dtype=bool)
        if any(w is not None for w in windows):
            low, high = (np.array([-np.inf if w is None else w[j] for w in windows]) for j in (0, 1))
            at = x[starts[seg] + f0]
            keep &= (at >= low[seg]) & (at <= high[seg])
        if s.min_tail is not None:
            keep &= k >= s.min_tail
        kept = np.bincount(seg[keep], minlength=sizes.size)
        for i in np.flatnonzero((kept == 0) & (np.bincount(seg, minlength=sizes.size) > 0)).tolist():
            why[i] = "no x_min candidate satisfies the x_min window / min_tail constraints"
        seg, pos, f0, k, t0, lam = seg[keep], pos[keep], f0[keep], k[keep], t0[keep], lam[keep]
    c0 = f0.astype(np.float64)
    bounds = [0, *itertools.accumulate(np.bincount(seg, minlength=sizes.size).tolist())]
    scale = None
    if s.method == "ww":
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = 1.0 + k / lam
        valid = (alpha > 1) & np.isfinite(alpha)
        sigma = (alpha - 1.0) / np.sqrt(k)
    elif s.xmax is not None:
        L = math.log(s.xmax) - t0
        # array by array: the Newton iteration stops when all of its arguments have converged
        alpha = np.concatenate([truncated_mle(lam[a:b] / k[a:b], L[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        valid = (alpha > s.lo) & (alpha < s.hi)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            scale = 1.0 / -np.expm1(-(alpha - 1.0) * L)
            sigma = truncated_stderr(alpha, L, k)
    else:
        alpha, valid = _powerlaw_alpha(k, lam, t0, s.lo, s.hi, s.estimator)
        sigma = (alpha - 1.0) / np.sqrt(k)
    scans: list[_Scan | str] = []
    for i, (a, b, p, count) in enumerate(zip(bounds[:-1], bounds[1:], point_starts.tolist(), count_list)):
        if why[i] is not None:
            scans.append(why[i])
            continue
        q = p + count
        scans.append(_Scan(t=t[p:q], c=c[p:q], n=size_list[i], pos=pos[a:b], t0=t0[a:b], c0=c0[a:b],
                           k=k[a:b], alpha=alpha[a:b], valid=valid[a:b], scale=None if scale is None else scale[a:b],
                           sigma=sigma[a:b]))
    return scans


def _argmins(scans: Sequence[_Scan]) -> list[tuple[int, float] | None]:
    """Candidate index and D of the best valid candidate of each scan (None if none is valid); the small scans'
    KS distances are computed together (:func:`hmu_diag.fits._ks_scan.ks_argmins`)."""
    valid = [np.flatnonzero(scan.valid) for scan in scans]
    problems = [(scan.t, scan.c, float(scan.n), scan.pos[v], scan.t0[v], scan.c0[v], scan.alpha[v] - 1.0,
                 None if scan.scale is None else scan.scale[v]) for scan, v in zip(scans, valid) if v.size]
    found = iter(ks_argmins(problems))
    out: list[tuple[int, float] | None] = []
    for v in valid:
        if v.size:
            j, D = next(found)
            out.append((int(v[j]), D))
        else:
            out.append(None)
    return out


def _ww_small_n(x: np.ndarray) -> tuple[float, float, float, float, int] | str:
    """WWFit for n < 20 (``fit_powerlaw_smallN`` followed by WWFit.__init__'s argmin over D).

    alpha = 1 + (k-1)/sum ln(x/x_min) at candidates with a tail k >= 8 (and alpha > 1); the others keep
    D = 1.  fit_powerlaw_smallN picks x_min by D - 0.868/sqrt(k), but WWFit.__init__ then overwrites that
    choice with argmin D, so argmin D is what WeightWatcher reports; with no such candidate (n < 8) the
    whole sample is the tail.
    """
    n = x.size
    i = np.arange(n - 1)
    k = (n - i).astype(np.float64)
    lx = np.log(x)
    s = np.cumsum(lx[::-1])[::-1][i] - k * lx[i]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # overflow only left of x_min (masked)
        a = 1.0 + (k - 1.0) / s
        F = 1.0 - (x[None, :] / x[i, None]) ** (1.0 - a[:, None])
    E = (np.arange(n)[None, :] - i[:, None]) / k[:, None]
    Dm = np.where(np.arange(n)[None, :] >= i[:, None], np.abs(E - F), -np.inf).max(axis=1)
    ok = (k >= _WW_SMALL_N_KMIN) & (s > 1e-12) & (a > 1.0)
    if not ok.any():
        ok[0] = s[0] > 1e-12 and a[0] > 1.0
        if not ok[0]:
            return "WW small-N fit: no tail with alpha > 1"
    j = int(np.argmin(np.where(ok, Dm, 1.0)))
    if not ok[j]:
        return "WW small-N fit: every KS distance is 1"
    n_tail = int(n - np.searchsorted(x, x[j]))
    return float(a[j]), float(x[j]), float(Dm[j]), float((a[j] - 1.0) / math.sqrt(k[j])), n_tail


# ------------------------------------------------------------------------------------- single fits


def _failed(status: str, n: int, n_dropped: int, method: str, fix_fingers, n_candidates: int = 0) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(alpha=nan, xmin=nan, xmax=nan, D=nan, sigma=nan, n_tail=0, n=n, status=f"failed: {status}",
                       n_dropped=n_dropped, n_candidates=n_candidates, method=method, fix_fingers=fix_fingers)


def _fixed_xmin_fit(x, xmin, xmax, lo, hi, estimator):
    """Fit alpha (and D) for a given x_min: the same estimator as at a scan candidate."""
    n = x.size
    c0 = int(np.searchsorted(x, xmin, side="left"))
    tail = x[c0:]
    k = tail.size
    if k < 2 or tail[0] == tail[-1]:
        return f"fewer than 2 distinct values at or above xmin={xmin:g}"
    lx = np.log(tail)
    t0 = math.log(xmin)
    lam = float(np.sum(lx - t0))
    kk, ll, tt = np.array([float(k)]), np.array([lam]), np.array([t0])
    if xmax is not None:
        L = np.array([math.log(xmax) - t0])
        alpha = truncated_mle(ll / kk, L)
        valid = (alpha > lo) & (alpha < hi)
        scale = 1.0 / -np.expm1(-(alpha - 1.0) * L)
        sigma = float(truncated_stderr(alpha, L, kk)[0])
    else:
        alpha, valid = _powerlaw_alpha(kk, ll, tt, lo, hi, estimator)
        scale = None
        sigma = float((alpha[0] - 1.0) / math.sqrt(k))
    if not valid[0]:
        return f"alpha={alpha[0]:.6g} at xmin={xmin:g} is outside alpha_range ({lo:g}, {hi:g})"
    first = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    t, c = np.log(x[first]), first.astype(np.float64)
    p = int(np.searchsorted(t, t0, side="left"))
    D = ks_distances(t, c, float(n), np.array([p]), tt, np.array([float(c0)]), alpha - 1.0, scale)
    return float(alpha[0]), float(D[0]), sigma, k


#: values within a factor e^(this) of each other have no tail with alpha < 50 (the default range): "nearly flat"
_FLAT_LOG_SPAN = 1.0 / 49.0


def _no_candidate_reason(x: np.ndarray, lo: float, hi: float, truncated: bool) -> str:
    """Why no x_min candidate is valid.  Every candidate's MLE is alpha = 1 + k / sum ln(x_i/x_min) >= 1 +
    1/ln(max/min), since each log is at most ln(max/min); for a nearly flat spectrum (max/min <= e^(1/49) ~ 1.02,
    e.g. a float32 orthogonal matrix's ESD, ~1 + 1e-6) that bound alone excludes every alpha below 50, and the
    status gives it."""
    log_span = math.log(float(x[-1])) - math.log(float(x[0]))      # no overflow for values spanning 1e-300..1e300
    if not truncated and log_span <= _FLAT_LOG_SPAN and 1.0 + 1.0 / log_span >= hi:
        return (f"the values span only a factor 1 + {math.expm1(log_span):.2g}, so every candidate tail has alpha >= "
                f"1 + 1/ln(max/min) = {1.0 + 1.0 / log_span:.4g}, above alpha_range's upper end {hi:g} (a nearly "
                "flat spectrum, e.g. of an orthogonal matrix)")
    return f"no x_min candidate gives alpha in ({lo:g}, {hi:g})"


def _prepared(x: np.ndarray, n_dropped: int, s: _Settings) -> PowerLawFit | tuple[np.ndarray, dict]:
    """A fit that needs no x_min scan (a failure, a fixed x_min, WW's small-N rule), or the values to scan and the
    fields shared by the result."""
    n = x.size
    if n < 2:
        return _failed(f"fewer than 2 positive finite values ({n})", n, n_dropped, s.method, s.fix_fingers)
    if x[0] == x[-1]:
        return _failed(f"all {n} values are identical ({x[0]:g})", n, n_dropped, s.method, s.fix_fingers)
    if x[-1] <= x[0] * (1.0 + _FLAT_SPREAD):      # any "tail" is rounding noise: alpha would exceed 1/_FLAT_SPREAD
        return _failed(f"all {n} values are identical to within {_FLAT_SPREAD:g} relative (max/min - 1 = "
                       f"{x[-1] / x[0] - 1.0:.1e}): a flat spectrum (e.g. of an orthogonal matrix) has no tail",
                       n, n_dropped, s.method, s.fix_fingers)
    common = dict(n=n, n_dropped=n_dropped, method=s.method, fix_fingers=s.fix_fingers)
    if s.xmax is not None:
        x = x[x <= s.xmax]
        if x.size < 2:
            return _failed(f"fewer than 2 values at or below xmax={s.xmax:g}", n, n_dropped, s.method, s.fix_fingers)
        common["n"] = x.size
    upper = float(s.xmax) if s.xmax is not None else float(x[-1])
    if s.xmin is not None:
        res = _fixed_xmin_fit(x, float(s.xmin), s.xmax, s.lo, s.hi, s.estimator)
        if isinstance(res, str):
            return _failed(res, x.size, n_dropped, s.method, s.fix_fingers)
        alpha, D, sigma, k = res
        return PowerLawFit(alpha=alpha, xmin=float(s.xmin), xmax=upper, D=D, sigma=sigma, n_tail=k, raw_alpha=alpha,
                           n_candidates=1, truncated=s.xmax is not None, **common)
    if s.method == "ww" and n < _WW_SMALL_N:
        res = _ww_small_n(x)
        if isinstance(res, str):
            return _failed(res, n, n_dropped, s.method, s.fix_fingers, n - 1)
        alpha, xm, D, sigma, k = res
        return PowerLawFit(alpha=alpha, xmin=xm, xmax=upper, D=D, sigma=sigma, n_tail=k, raw_alpha=alpha,
                           n_candidates=n - 1, **common)
    return x, dict(common, xmax=upper)


def _fit_sorted(items: Sequence[tuple[np.ndarray, int, tuple[float, float] | None]], s: _Settings
                ) -> list[PowerLawFit]:
    """One fit (no finger handling, no bootstrap) per ``(sorted positive values, n_dropped, x_min window)``; the
    x_min scans of all of them run as one batch (:func:`_build_scans`, :func:`_argmins`), each result the same as
    alone."""
    out: list[PowerLawFit | None] = [None] * len(items)
    todo = []                                     # (slot, values to scan, common fields, window)
    for i, (x, n_dropped, window) in enumerate(items):
        prepared = _prepared(x, n_dropped, s)
        if isinstance(prepared, PowerLawFit):
            out[i] = prepared
        else:
            todo.append((i, *prepared, window))
    if not todo:
        return out  # type: ignore[return-value]
    scans = _build_scans([x for _, x, _, _ in todo], [w for *_, w in todo], s)
    ready = [scan for scan in scans if not isinstance(scan, str)]
    best = iter(_argmins(ready))
    for (i, x, common, _), scan in zip(todo, scans):
        if isinstance(scan, str):
            out[i] = _failed(scan, x.size, common["n_dropped"], s.method, s.fix_fingers)
            continue
        found = next(best)
        if found is None:
            out[i] = _failed(_no_candidate_reason(x, s.lo, s.hi, s.xmax is not None), x.size, common["n_dropped"],
                             s.method, s.fix_fingers, scan.pos.size)
            continue
        j, D = found
        alpha = float(scan.alpha[j])
        xm = float(x[int(scan.c0[j])])
        n_tail = int(scan.k[j]) if s.method == "powerlaw" else int(x.size - np.searchsorted(x, xm))
        out[i] = PowerLawFit(alpha=alpha, xmin=xm, D=D, sigma=float(scan.sigma[j]), n_tail=n_tail, raw_alpha=alpha,
                             n_candidates=int(scan.pos.size), truncated=s.xmax is not None, **common)
    return out  # type: ignore[return-value]


def esd_peak(evals, bins: int = 100) -> float:
    """WeightWatcher's ESD peak: 10 ** (left edge of the fullest of ``bins`` equal bins of log10(evals > 0))."""
    x, _ = positive_sorted(evals)
    if x.size == 0:
        return math.nan
    h, edges = np.histogram(np.log10(x), bins=bins)
    return float(10.0 ** edges[int(np.argmax(h))])


def _clip_fingers(x: np.ndarray, n_dropped: int, s: _Settings, raw: PowerLawFit, max_fingers: int,
                  finger_thresh: float, min_alpha: float | None) -> tuple[PowerLawFit, np.ndarray, int]:
    """WeightWatcher's ``fix_fingers='clip_xmax'`` (RMT_Util.fit_clipped_powerlaw, 0.7.7).

    Refit without the top idx values for idx = 2 .. max_fingers-1 (dropping a single value is never
    tried); accept the first refit whose alpha is below raw_alpha - finger_thresh; stop early once a
    refit has alpha <= min_alpha.  WW reports ``num_fingers = idx - 1``; we report idx, the number of
    values actually removed.  The refits run as one batch; they are read in WW's order.
    """
    removals = [idx for idx in range(2, max_fingers) if x.size - idx >= 2]
    refits = _fit_sorted([(x[:-idx], n_dropped, None) for idx in removals], s) if removals else []
    for idx, fit in zip(removals, refits):
        if not fit.ok:
            break
        if fit.alpha + finger_thresh < raw.alpha:
            return fit, x[:-idx], idx
        if min_alpha is not None and fit.alpha <= min_alpha:
            break
    return raw, x, 0


def _sample_model(rng: np.random.Generator, fit: PowerLawFit, x: np.ndarray) -> np.ndarray:
    """One CSN semi-parametric replicate (CSN sec. 4.1): tail from the fit, body resampled from the data."""
    n = x.size
    body = x[x < fit.xmin]
    n_tail = n if body.size == 0 else int(rng.binomial(n, fit.n_tail / n))
    u = rng.random(n_tail)
    b = fit.alpha - 1.0
    if fit.truncated:
        tail = fit.xmin * (1.0 - u * -np.expm1(-b * math.log(fit.xmax / fit.xmin))) ** (-1.0 / b)
    else:
        tail = fit.xmin * (1.0 - u) ** (-1.0 / b)
    return np.sort(np.concatenate([tail, rng.choice(body, n - n_tail)]) if n_tail < n else tail)


#: bootstrap replicates fitted per batch (bounds the memory of a batch to this many replicates)
_BOOT_BATCH = 64


def _bootstrap_p(fit: PowerLawFit, x: np.ndarray, n_dropped: int, window: tuple[float, float] | None,
                 s: _Settings, n_boot: int, seed: int) -> float:
    """Fraction of replicates whose refitted D (same x_min procedure) is >= the observed D.  The replicates are
    drawn one after another from one generator and refitted in batches of ``_BOOT_BATCH``."""
    rng = np.random.default_rng(seed)
    Ds = []
    for start in range(0, n_boot, _BOOT_BATCH):
        replicates = [_sample_model(rng, fit, x) for _ in range(min(_BOOT_BATCH, n_boot - start))]
        Ds.extend(refit.D for refit in _fit_sorted([(r, n_dropped, window) for r in replicates], s))
    Ds = np.array(Ds)
    Ds = Ds[~np.isnan(Ds)]
    return float(np.mean(Ds >= fit.D)) if Ds.size else math.nan


def fit_power_law(
    evals,
    xmin: float | None = None,
    xmax: float | None = None,
    *,
    fix_fingers: FixFingers = None,
    alpha_range: tuple[float, float] = (1.0, 50.0),
    xmin_range: tuple[float, float] | None = None,
    min_tail: int | None = None,
    n_boot: int = 0,
    seed: int = 0,
    method: Method = "powerlaw",
    estimator: Literal["powerlaw", "mle"] = "powerlaw",
    max_fingers: int = 10,
    finger_thresh: float = 1.0,
    min_alpha: float | None = 2.0,
    peak_window: tuple[float, float] = (0.95, 1.5),
) -> PowerLawFit:
    """Fit p(x) ~ x^-alpha to the tail of ``evals``; never raises on bad data (see ``status``).

    Parameters
    ----------
    evals : array-like
        Values (eigenvalues); non-finite and non-positive ones are dropped (``n_dropped``).
    xmin : float, optional
        Fixed lower end of the tail: no scan, alpha fitted with the same estimator as at a candidate.
    xmax : float, optional
        Fixed upper truncation.  Values above it are discarded, and alpha at every candidate is the exact
        MLE of the power law truncated to [x_min, x_max] (density (alpha-1) x^-alpha /
        (x_min^(1-alpha) - x_max^(1-alpha)), see :mod:`hmu_diag.fits._truncated`); D compares the tail's
        ECDF with the truncated CDF (1 - (x/x_min)^(1-alpha)) / (1 - (x_max/x_min)^(1-alpha)).  powerlaw
        2.0.0's ``xmax`` is not reproduced: it mixes the untruncated closed form (alpha in (1.5, 3]) with
        a truncated numerical fit elsewhere.
    fix_fingers : {None, "xmin_peak", "clip_xmax"}
        WeightWatcher 0.7.7's remedies for a few outlying top eigenvalues.  ``"xmin_peak"`` restricts x_min
        to ``peak_window`` times the ESD peak (:func:`esd_peak`).  WW and its descendants (TempBalance,
        AlphaPruning, FARMS) write that window as ``(log10(0.95 p), 1.5 p)`` - a lower bound in log units,
        which in effect only caps x_min at 1.5 p; we implement the evidently intended [0.95 p, 1.5 p]
        (pass ``xmin_range=(np.log10(0.95 * p), 1.5 * p)`` to reproduce the quirk).  ``"clip_xmax"`` refits
        without the top 2 .. ``max_fingers``-1 values and keeps the first fit whose alpha drops by more than
        ``finger_thresh`` (stopping once alpha <= ``min_alpha``); ``raw_alpha`` is the unclipped alpha.
    alpha_range : (low, high)
        Valid exponents, open interval; powerlaw's ``parameter_ranges={"alpha": [low, high]}``.  (powerlaw
        2.0.0's own default, [0, 3], silently caps alpha below 3 - never use it for ESDs.)
    xmin_range : (low, high), optional
        Only candidates with low <= x_min <= high.  (powerlaw's ``xmin=(low, high)`` also drops the largest
        value inside the window; we do not.)
    min_tail : int, optional
        Only candidates with at least this many values in the tail.
    n_boot, seed
        Number of CSN bootstrap replicates for ``p_value`` (CSN sec. 4.1: tail drawn from the fitted law,
        body resampled from the values below x_min, each replicate refitted with the same x_min procedure -
        window, min_tail, xmax or fixed xmin - but without finger clipping; 2500 give +-0.01), and the
        seed of their ``numpy.random.default_rng``.
    method : {"powerlaw", "ww"}
        Reproduce powerlaw 2.0.0 ``Fit`` (default) or WeightWatcher 0.7.7 ``WWFit`` (module docstring).
    estimator : {"powerlaw", "mle"}
        ``"powerlaw"``: powerlaw 2.0.0's Nelder-Mead outside (1.5, 3]; ``"mle"``: exact closed form.
    """
    return _fit_all([evals], xmin=xmin, xmax=xmax, fix_fingers=fix_fingers, alpha_range=alpha_range,
                    xmin_range=xmin_range, min_tail=min_tail, n_boot=n_boot, seed=seed, method=method,
                    estimator=estimator, max_fingers=max_fingers, finger_thresh=finger_thresh, min_alpha=min_alpha,
                    peak_window=peak_window)[0]


#: what fit_power_law_many binds its options to (inspecting a signature costs ~0.1 ms a call)
_FIT_SIGNATURE = inspect.signature(fit_power_law)


def fit_power_law_many(evals_list: Sequence, **options: Any) -> list[PowerLawFit]:
    """:func:`fit_power_law` of each array of ``evals_list`` with the same ``options`` (its keyword arguments).

    The x_min scans of all arrays run as one batch of array operations - a small spectrum's fit costs numpy's
    per-call overhead, so the layers of a model fitted together cost little more than one - and each fit is the
    same, bit for bit, as ``fit_power_law(evals, **options)`` alone.
    """
    bound = _FIT_SIGNATURE.bind(None, **options)
    bound.apply_defaults()
    del bound.arguments["evals"]
    return _fit_all(list(evals_list), **bound.arguments)


def _fit_all(evals_list: list, *, xmin, xmax, fix_fingers, alpha_range, xmin_range, min_tail, n_boot, seed, method,
             estimator, max_fingers, finger_thresh, min_alpha, peak_window) -> list[PowerLawFit]:
    """:func:`fit_power_law_many` with every option given."""
    lo, hi = _check_options(alpha_range, xmin, xmax, xmin_range, min_tail, fix_fingers, method, estimator)
    if int(n_boot) != n_boot or n_boot < 0:
        raise OptionError(f"n_boot={n_boot!r}: must be a non-negative integer")
    settings = _Settings(lo=lo, hi=hi, xmin=xmin, xmax=xmax, min_tail=min_tail, method=method, estimator=estimator,
                         fix_fingers=fix_fingers)
    given = None if xmin_range is None else (float(xmin_range[0]), float(xmin_range[1]))
    items = []
    for x, n_dropped in positive_sorted_many(evals_list):
        window = given
        if fix_fingers == "xmin_peak" and x.size:
            p = esd_peak(x)
            window = (peak_window[0] * p, peak_window[1] * p)
        items.append((x, n_dropped, window))
    fits = _fit_sorted(items, settings)
    for i, ((x, n_dropped, window), fit) in enumerate(zip(items, fits)):
        if fit.ok and fix_fingers == "clip_xmax":
            raw_alpha = fit.alpha
            fit, x, removed = _clip_fingers(x, n_dropped, settings, fit, max_fingers, finger_thresh, min_alpha)
            fit = replace(fit, raw_alpha=raw_alpha, num_fingers=removed)
        if fit.ok and n_boot:
            fit = replace(fit, p_value=_bootstrap_p(fit, x if xmax is None else x[x <= xmax], n_dropped, window,
                                                    settings, int(n_boot), seed))
        fits[i] = fit
    return fits


def fit_power_law_ww(evals, *, fix_fingers: Literal["clip_xmax"] | None = None, max_fingers: int = 10,
                     finger_thresh: float = 1.0) -> PowerLawFit:
    """WeightWatcher 0.7.7's per-layer power-law fit (``WW_powerlaw.WWFit``, ``pl_package="ww"``).

    Shorthand for ``fit_power_law(evals, method="ww", ...)``: candidates are all data points but the largest,
    D uses the lower ECDF step, no alpha range, WW's small-N rule below 20 values.  With
    ``fix_fingers="clip_xmax"`` it is WW's ``fit_clipped_powerlaw`` (``num_fingers`` = values removed, one
    more than WW's column).
    """
    return fit_power_law(evals, method="ww", fix_fingers=fix_fingers, max_fingers=max_fingers,
                         finger_thresh=finger_thresh)


def power_law_scan(
    evals,
    xmax: float | None = None,
    *,
    alpha_range: tuple[float, float] = (1.0, 50.0),
    xmin_range: tuple[float, float] | None = None,
    min_tail: int | None = None,
    method: Method = "powerlaw",
    estimator: Literal["powerlaw", "mle"] = "powerlaw",
) -> PowerLawScan:
    """alpha, D, tail size and validity at every x_min candidate (the full O(n^2) KS scan; for plots).

    ``fit_power_law`` with the same options picks argmin D over ``valid`` (lowest x_min on ties).
    Raises :class:`~hmu_diag.errors.OptionError` when there is nothing to scan.
    """
    lo, hi = _check_options(alpha_range, None, xmax, xmin_range, min_tail, None, method, estimator)
    x, _ = positive_sorted(evals)
    if xmax is not None:
        x = x[x <= xmax]
    if x.size < 2 or x[0] == x[-1]:
        raise OptionError(f"power_law_scan: need at least 2 distinct positive finite values (got {x.size})")
    window = None if xmin_range is None else (float(xmin_range[0]), float(xmin_range[1]))
    scan = _build_scans([x], [window], _Settings(lo=lo, hi=hi, xmax=xmax, min_tail=min_tail, method=method,
                                                 estimator=estimator))[0]
    if isinstance(scan, str):
        raise OptionError(f"power_law_scan: {scan}")
    with np.errstate(invalid="ignore", over="ignore"):
        D = ks_distances(scan.t, scan.c, float(scan.n), scan.pos, scan.t0, scan.c0, scan.alpha - 1.0, scan.scale)
    return PowerLawScan(xmin=x[scan.c0.astype(np.intp)], alpha=scan.alpha, D=D, n_tail=scan.k.astype(np.int64),
                        valid=scan.valid)


def compare_power_law(
    evals,
    alternatives: tuple[str, ...] = ALTERNATIVES,
    *,
    fit: PowerLawFit | None = None,
    level: float = 0.1,
    **fit_options,
) -> dict[str, LikelihoodRatio]:
    """Likelihood-ratio tests of the fitted power-law tail against each alternative (CSN sec. 5).

    ``fit`` defaults to ``fit_power_law(evals, **fit_options)``; the tail is the values in [xmin, xmax] of
    that fit.  Alternatives, formulas and the nested / non-nested p-values: :mod:`hmu_diag.fits._compare`.
    """
    unknown = set(alternatives) - set(ALTERNATIVES)
    if unknown:
        raise OptionError(f"alternatives: unknown {sorted(unknown)}; expected some of {list(ALTERNATIVES)}")
    if fit is None:
        fit = fit_power_law(evals, **fit_options)
    if not fit.ok:
        raise OptionError(f"compare_power_law: the power-law fit {fit.status}")
    if fit.truncated:
        raise OptionError("compare_power_law: needs an untruncated fit (xmax=None)")
    x, _ = positive_sorted(evals)
    tail = x[(x >= fit.xmin) & (x <= fit.xmax)]
    return {alt: compare_tail(tail, fit.xmin, fit.alpha, alt, level) for alt in alternatives}
