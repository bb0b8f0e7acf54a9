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

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from hmu_diag.errors import OptionError
from hmu_diag.fits._compare import ALTERNATIVES, LikelihoodRatio, compare_tail
from hmu_diag.fits._ks_scan import ks_argmin, ks_distances
from hmu_diag.fits._nelder_mead import nelder_mead_1d
from hmu_diag.fits._result import FitStatus
from hmu_diag.fits._truncated import truncated_mle, truncated_stderr

__all__ = [
    "PowerLawFit", "PowerLawScan", "LikelihoodRatio", "fit_power_law", "fit_power_law_ww", "power_law_scan",
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


def _clean(evals) -> tuple[np.ndarray, int]:
    """Sorted positive finite float64 values and the number of values dropped."""
    x = np.asarray(evals, dtype=np.float64).ravel()
    keep = np.isfinite(x) & (x > 0)
    return np.sort(x[keep]), int(x.size - np.count_nonzero(keep))


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


def _build_scan(x: np.ndarray, *, method: str, estimator: str, lo: float, hi: float, xmax: float | None,
                xmin_window: tuple[float, float] | None, min_tail: int | None) -> _Scan | str:
    """Candidates, their alphas and validity; a string says why there is nothing to scan."""
    n = x.size
    lx = np.log(x)
    # suffix sums of ln x - ln x_0 (subtracting ln x_0 limits cancellation): S[s] = sum_{i >= s}
    S = np.zeros(n + 1)
    np.cumsum((lx - lx[0])[::-1], out=S[1:])
    S = S[::-1]
    if method == "ww":
        t, c = lx, np.arange(n, dtype=np.float64)
        pos = np.arange(n - 1)
    else:
        first = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
        t, c = lx[first], first.astype(np.float64)
        if first.size < 4:
            return f"fewer than 4 distinct values ({first.size}): powerlaw needs 2 x_min candidates"
        pos = np.arange(first.size - 2)
    f0 = c[pos].astype(np.intp)
    k = (n - f0).astype(np.float64)
    t0 = t[pos]
    lam = S[f0] - k * (t0 - lx[0])           # sum over the tail of ln(x/x_min)
    if xmin_window is not None or min_tail is not None:
        keep = np.ones(pos.size, dtype=bool)
        if xmin_window is not None:
            keep &= (x[f0] >= xmin_window[0]) & (x[f0] <= xmin_window[1])
        if min_tail is not None:
            keep &= k >= min_tail
        if not keep.any():
            return "no x_min candidate satisfies the x_min window / min_tail constraints"
        pos, f0, k, t0, lam = pos[keep], f0[keep], k[keep], t0[keep], lam[keep]
    c0 = f0.astype(np.float64)

    scale = None
    if method == "ww":
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = 1.0 + k / lam
        valid = (alpha > 1) & np.isfinite(alpha)
        sigma = (alpha - 1.0) / np.sqrt(k)
    elif xmax is not None:
        L = math.log(xmax) - t0
        alpha = truncated_mle(lam / k, L)
        valid = (alpha > lo) & (alpha < hi)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            scale = 1.0 / -np.expm1(-(alpha - 1.0) * L)
            sigma = truncated_stderr(alpha, L, k)
    else:
        alpha, valid = _powerlaw_alpha(k, lam, t0, lo, hi, estimator)
        sigma = (alpha - 1.0) / np.sqrt(k)
    return _Scan(t=t, c=c, n=n, pos=pos, t0=t0, c0=c0, k=k, alpha=alpha, valid=valid, scale=scale,
                 sigma=sigma)


def _argmin(scan: _Scan) -> tuple[int, float] | None:
    """Candidate index and D of the best valid candidate (None if none is valid)."""
    v = np.flatnonzero(scan.valid)
    if v.size == 0:
        return None
    sc = None if scan.scale is None else scan.scale[v]
    j, D = ks_argmin(scan.t, scan.c, float(scan.n), scan.pos[v], scan.t0[v], scan.c0[v],
                     scan.alpha[v] - 1.0, sc)
    return int(v[j]), D


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
    with np.errstate(divide="ignore", invalid="ignore"):
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
                "flat spectrum, "
                "e.g. of an orthogonal matrix)")
    return f"no x_min candidate gives alpha in ({lo:g}, {hi:g})"


def _fit_once(x, *, n_dropped, xmin, xmax, lo, hi, xmin_window, min_tail, method, estimator,
              fix_fingers) -> PowerLawFit:
    """One fit of sorted positive data (no finger handling, no bootstrap)."""
    n = x.size
    if n < 2:
        return _failed(f"fewer than 2 positive finite values ({n})", n, n_dropped, method, fix_fingers)
    if x[0] == x[-1]:
        return _failed(f"all {n} values are identical ({x[0]:g})", n, n_dropped, method, fix_fingers)
    if x[-1] <= x[0] * (1.0 + _FLAT_SPREAD):      # any "tail" is rounding noise: alpha would exceed 1/_FLAT_SPREAD
        return _failed(f"all {n} values are identical to within {_FLAT_SPREAD:g} relative (max/min - 1 = "
                       f"{x[-1] / x[0] - 1.0:.1e}): a flat spectrum (e.g. of an orthogonal matrix) has no tail",
                       n, n_dropped, method, fix_fingers)
    common = dict(n=n, n_dropped=n_dropped, method=method, fix_fingers=fix_fingers)
    if xmax is not None:
        x = x[x <= xmax]
        if x.size < 2:
            return _failed(f"fewer than 2 values at or below xmax={xmax:g}", n, n_dropped, method, fix_fingers)
        common["n"] = x.size
    upper = float(xmax) if xmax is not None else float(x[-1])
    if xmin is not None:
        res = _fixed_xmin_fit(x, float(xmin), xmax, lo, hi, estimator)
        if isinstance(res, str):
            return _failed(res, x.size, n_dropped, method, fix_fingers)
        alpha, D, sigma, k = res
        return PowerLawFit(alpha=alpha, xmin=float(xmin), xmax=upper, D=D, sigma=sigma, n_tail=k, raw_alpha=alpha,
                           n_candidates=1, truncated=xmax is not None, **common)
    if method == "ww" and n < _WW_SMALL_N:
        res = _ww_small_n(x)
        if isinstance(res, str):
            return _failed(res, n, n_dropped, method, fix_fingers, n - 1)
        alpha, xm, D, sigma, k = res
        return PowerLawFit(alpha=alpha, xmin=xm, xmax=upper, D=D, sigma=sigma, n_tail=k, raw_alpha=alpha,
                           n_candidates=n - 1, **common)
    scan = _build_scan(x, method=method, estimator=estimator, lo=lo, hi=hi, xmax=xmax, xmin_window=xmin_window,
                       min_tail=min_tail)
    if isinstance(scan, str):
        return _failed(scan, x.size, n_dropped, method, fix_fingers)
    best = _argmin(scan)
    if best is None:
        return _failed(_no_candidate_reason(x, lo, hi, xmax is not None), x.size, n_dropped, method, fix_fingers,
                       scan.pos.size)
    j, D = best
    alpha = float(scan.alpha[j])
    xm = float(x[int(scan.c0[j])])
    n_tail = int(scan.k[j]) if method == "powerlaw" else int(x.size - np.searchsorted(x, xm))
    return PowerLawFit(alpha=alpha, xmin=xm, xmax=upper, D=D, sigma=float(scan.sigma[j]), n_tail=n_tail,
                       raw_alpha=alpha, n_candidates=int(scan.pos.size), truncated=xmax is not None, **common)


def esd_peak(evals, bins: int = 100) -> float:
    """WeightWatcher's ESD peak: 10 ** (left edge of the fullest of ``bins`` equal bins of log10(evals > 0))."""
    x, _ = _clean(evals)
    if x.size == 0:
        return math.nan
    h, edges = np.histogram(np.log10(x), bins=bins)
    return float(10.0 ** edges[int(np.argmax(h))])


def _clip_fingers(x, fit_kw, raw: PowerLawFit, max_fingers: int, finger_thresh: float,
                  min_alpha: float | None) -> tuple[PowerLawFit, np.ndarray, int]:
    """WeightWatcher's ``fix_fingers='clip_xmax'`` (RMT_Util.fit_clipped_powerlaw, 0.7.7).

    Refit without the top idx values for idx = 2 .. max_fingers-1 (dropping a single value is never
    tried); accept the first refit whose alpha is below raw_alpha - finger_thresh; stop early once a
    refit has alpha <= min_alpha.  WW reports ``num_fingers = idx - 1``; we report idx, the number of
    values actually removed.
    """
    for idx in range(2, max_fingers):
        if x.size - idx < 2:
            break
        fit = _fit_once(x[:-idx], **fit_kw)
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


def _bootstrap_p(fit: PowerLawFit, x: np.ndarray, fit_kw: dict, n_boot: int, seed: int) -> float:
    """Fraction of replicates whose refitted D (same x_min procedure) is >= the observed D."""
    rng = np.random.default_rng(seed)
    Ds = np.array([_fit_once(_sample_model(rng, fit, x), **fit_kw).D for _ in range(n_boot)])
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
    lo, hi = _check_options(alpha_range, xmin, xmax, xmin_range, min_tail, fix_fingers, method, estimator)
    if int(n_boot) != n_boot or n_boot < 0:
        raise OptionError(f"n_boot={n_boot!r}: must be a non-negative integer")
    x, n_dropped = _clean(evals)
    window = None if xmin_range is None else (float(xmin_range[0]), float(xmin_range[1]))
    if fix_fingers == "xmin_peak" and x.size:
        p = esd_peak(x)
        window = (peak_window[0] * p, peak_window[1] * p)
    fit_kw = dict(n_dropped=n_dropped, xmin=xmin, xmax=xmax, lo=lo, hi=hi, xmin_window=window, min_tail=min_tail,
                  method=method, estimator=estimator, fix_fingers=fix_fingers)
    fit = _fit_once(x, **fit_kw)
    if fit.ok and fix_fingers == "clip_xmax":
        raw_alpha = fit.alpha
        fit, x, removed = _clip_fingers(x, fit_kw, fit, max_fingers, finger_thresh, min_alpha)
        fit = replace(fit, raw_alpha=raw_alpha, num_fingers=removed)
    if fit.ok and n_boot:
        fit = replace(fit, p_value=_bootstrap_p(fit, x if xmax is None else x[x <= xmax], fit_kw, int(n_boot), seed))
    return fit


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
    x, _ = _clean(evals)
    if xmax is not None:
        x = x[x <= xmax]
    if x.size < 2 or x[0] == x[-1]:
        raise OptionError(f"power_law_scan: need at least 2 distinct positive finite values (got {x.size})")
    window = None if xmin_range is None else (float(xmin_range[0]), float(xmin_range[1]))
    scan = _build_scan(x, method=method, estimator=estimator, lo=lo, hi=hi, xmax=xmax, xmin_window=window,
                       min_tail=min_tail)
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
    x, _ = _clean(evals)
    tail = x[(x >= fit.xmin) & (x <= fit.xmax)]
    return {alt: compare_tail(tail, fit.xmin, fit.alpha, alt, level) for alt in alternatives}
