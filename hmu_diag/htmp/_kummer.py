"""|U(a, 1 - delta, -t)|^2 on the negative real axis: a fast vectorised scipy path and an mpmath path.

HTMP's density needs only the modulus of Tricomi's confluent hypergeometric function U on its branch cut
(both sides give the same modulus).  The fast path uses the connection formula (DLMF 13.2.41) with Kummer's
M = ``scipy.special.hyp1f1`` (b = 1 - delta, s = a + delta):

    A = M(a, 1 - delta, -t) / (Gamma(s) Gamma(1 - delta))
    B = t^delta M(s, 1 + delta, -t) / (Gamma(a) Gamma(1 + delta))
    U(a, 1 - delta, -t -+ i0) = (pi / sin(pi delta)) [A - e^{+-i pi delta} B]
    |U|^2 = (pi / sin pi delta)^2 [(A - cos(pi delta) B)^2 + sin^2(pi delta) B^2],   Im U = +-pi B.

A and B are formed in log space (gammaln, gammasgn), so Gamma overflow does not occur for large a or delta.
The real part (A - cos(pi delta) B)/sin(pi delta) cancels when delta is near an integer or when A ~ cos(pi delta) B;
an error estimate ``2 eps |A - cB| (|A| + |B|) / ((A - cB)^2 + sin^2 B^2)`` flags those points.  Within
``INT_GAP`` of an integer delta the function (analytic in delta) is interpolated (cubic Lagrange) from
delta = n -+ INT_GAP, n -+ 2 INT_GAP, an O(INT_GAP^4) error.  The accuracy of each M value is estimated by comparing
it with Kummer's transformation e^{-t} M(b - a, b, t).  Points that stay inaccurate are reported as not ok; callers
use the ODE table or mpmath.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import mpmath as mp
import numpy as np
from scipy import special as sp

#: half-width of the window around a positive integer delta where the connection formula is not used
INT_GAP = 0.05
#: relative accuracy assumed for scipy.special.hyp1f1 in the error estimate
_EPS_M = 1e-14
#: largest t at which the Kummer-transformation check is evaluated
_T_CHECK = 700.0
#: largest estimated relative error in |U|^2 that the fast path accepts
FAST_TOL = 1e-10


def hyp1f1(a: float, b: float, z: np.ndarray) -> np.ndarray:
    """Kummer M(a, b, z) = scipy.special.hyp1f1 except for tiny |z|, where scipy can return inf/NaN or lose digits
    (e.g. hyp1f1(0.001, 1.0005, -1e-300) = inf in scipy 1.17): there the Taylor series is summed to 8 terms
    (term ratio < 1e-3, so the truncation error is < 1e-24)."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(all="ignore"):
        out = sp.hyp1f1(a, b, z)
    growth = max(1.0, max(abs(a + k) / max(abs(b + k), 1e-300) for k in range(8)))
    small = np.abs(z) * growth < 1e-3
    if small.any():
        zs = z[small]
        term = np.ones_like(zs)
        series = np.ones_like(zs)
        for k in range(8):
            term = term * ((a + k) / (b + k) / (k + 1)) * zs
            series = series + term
        out = np.array(out, copy=True)
        out[small] = series
    return out


def _kummer_checked(p: float, q: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M(p, q, -t) and an estimate of its relative error: the discrepancy with Kummer's transformation
    e^{-t} M(q - p, q, t) (an independent evaluation, compared in log space), floored at _EPS_M.  Points where the
    check is impossible (t > _T_CHECK, where scipy's hyp1f1 at large positive argument overflows or, beyond ~1e12,
    takes seconds per call, and at huge negative argument can stall) are not evaluated: NaN with an infinite
    estimate, i.e. they go to the robust path."""
    with np.errstate(all="ignore"):
        checkable = t <= _T_CHECK
        direct = np.full(t.shape, np.nan)
        other = np.full(t.shape, np.nan)
        if checkable.any():
            direct[checkable] = hyp1f1(p, q, -t[checkable])
            other[checkable] = hyp1f1(q - p, q, t[checkable])
        usable = checkable & np.isfinite(other) & (other != 0) & np.isfinite(direct)
        log_ratio = np.log(np.abs(direct)) - (np.log(np.abs(other)) - t)
        same_sign = np.sign(direct) == np.sign(other)
        rel = np.where(same_sign, np.abs(np.expm1(log_ratio)), np.inf)
        rel = np.where(usable, rel, np.where(checkable, 0.0, np.inf))
        rel = np.where(np.isnan(rel), np.inf, rel)
    return direct, np.maximum(rel, _EPS_M)


def connection_parts(a: float, d: float, t: np.ndarray):
    """Connection formula at non-integer delta.

    Returns (log|U|^2, err, Re U/pi, Im U/pi = B, big) where Re U/pi and B are scaled by e^-big and err estimates
    the relative error of |U|^2 (and, in radians, of arg U) by propagating the relative errors of the two M values
    (see :func:`_kummer_checked`) through |U|^2 ~ (A - cos B)^2 + sin^2 B^2.
    """
    s = a + d
    sn, cs = np.sin(np.pi * d), np.cos(np.pi * d)
    with np.errstate(all="ignore"):
        m1, e1 = _kummer_checked(a, 1.0 - d, t)
        m2, e2 = _kummer_checked(s, 1.0 + d, t)
        log_a = np.log(np.abs(m1)) - sp.gammaln(s) - sp.gammaln(1.0 - d)
        sgn_a = np.sign(m1) * sp.gammasgn(1.0 - d)
        log_b = d * np.log(t) + np.log(np.abs(m2)) - sp.gammaln(a) - sp.gammaln(1.0 + d)
        sgn_b = np.sign(m2)
        big = np.maximum(log_a, log_b)
        big = np.where(np.isfinite(big), big, 0.0)
        aa = sgn_a * np.exp(log_a - big)
        bb = sgn_b * np.exp(log_b - big)
        re = aa - cs * bb                      # = sin(pi d) Re U / pi, scaled by exp(-big)
        im = sn * bb
        r2 = re * re + im * im
        log_u2 = 2.0 * np.log(np.pi / abs(sn)) + 2.0 * big + np.log(r2)
        err = 2.0 * (np.abs(re) * (e1 * np.abs(aa) + e2 * np.abs(cs * bb)) + e2 * im * im) / r2
        err = np.where(np.isfinite(log_u2) & np.isfinite(err), err, np.inf)
        re_u = re / sn
    return log_u2, err, re_u, bb, big


def fast_applicable(d: float) -> bool:
    """Whether the connection formula may be used at this delta: not within INT_GAP of a positive integer.

    Near delta = n >= 1, b = 1 - delta approaches a pole of M(a, b, z) and scipy's hyp1f1 loses all accuracy for
    large n (measured: relative error 1e3 at delta = 90.1, 5e-5 at delta = 30.0003) while Kummer's transformation
    agrees with it, so the error estimate cannot see it.  At delta = 0 (gamma = 1) sin(pi delta) = 0 and the error
    estimate rejects the points."""
    n = round(d)
    return n < 1 or abs(d - n) >= INT_GAP


def log_abs_u2_fast(a: float, d: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log|U(a, 1-d, -t)|^2 for t > 0 (array), and a mask of points whose estimated relative error is < FAST_TOL
    (all False where :func:`fast_applicable` is False)."""
    t = np.asarray(t, dtype=np.float64)
    if not fast_applicable(d):
        return np.full(t.shape, np.nan), np.zeros(t.shape, dtype=bool)
    out, err = connection_parts(a, d, t)[:2]
    return out, err < FAST_TOL


def log_abs_u2_large_t(a: float, d: float, t: np.ndarray) -> np.ndarray:
    """log|U(a, 1-d, -t)|^2 from the large-argument expansion (DLMF 13.7.3) with a - b + 1 = s = a + d:
    U(a, b, -t) ~ (-t)^(-a) sum_n (a)_n (s)_n / n! t^(-n), the exponentially small e^(-t) part dropped.
    NaN where the smallest term of the (asymptotic) series is not below 1e-17 of the sum within 80 terms."""
    t = np.asarray(t, dtype=np.float64)
    s = a + d
    term = np.ones_like(t)
    total = np.ones_like(t)
    done = np.zeros(t.shape, dtype=bool)
    failed = np.zeros(t.shape, dtype=bool)
    with np.errstate(all="ignore"):
        for n in range(80):
            nxt = term * (a + n) * (s + n) / ((n + 1) * t)
            failed |= ~done & (np.abs(nxt) >= np.abs(term))      # terms grow before converging
            done |= ~failed & (np.abs(nxt) < 1e-17 * np.abs(total))
            term = np.where(done | failed, 0.0, nxt)
            total = total + term
            if (done | failed).all():
                break
        out = -2.0 * a * np.log(t) + 2.0 * np.log(np.abs(total))
    return np.where(done & np.isfinite(out), out, np.nan)


#: mpmath's (maxterms, maxprec) for U: generous by default (exact answers can take ~10 s); fits lower them with
#: :func:`mpmath_limits` so that one layer never waits minutes (a failed evaluation is reported, not awaited)
_MPMATH_LIMITS: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("mpmath_limits",
                                                                                  default=(10 ** 6, 20000))
#: the limits fits use: fail within ~20 ms where the series would need minutes (measured: delta ~ 5e4)
FIT_MPMATH_LIMITS = (10 ** 4, 2000)


@contextlib.contextmanager
def mpmath_limits(maxterms: int, maxprec: int) -> Iterator[None]:
    """Within the block, mpmath evaluations of U give up (NoConvergence) beyond these term/precision limits."""
    token = _MPMATH_LIMITS.set((int(maxterms), int(maxprec)))
    try:
        yield
    finally:
        _MPMATH_LIMITS.reset(token)


def hyperu_mpmath(a, b, z) -> mp.mpc:
    """mpmath's U(a, b, z) under the current :func:`mpmath_limits`; raises NoConvergence beyond them."""
    maxterms, maxprec = _MPMATH_LIMITS.get()
    return mp.hyperu(a, b, z, maxterms=maxterms, maxprec=maxprec)


def u_mpmath(a: float, d: float, t: float, dps: int = 30) -> mp.mpc:
    """U(a, 1 - d, -t) (principal branch) by mpmath under the current limits; raises on failure."""
    with mp.workdps(dps):
        return hyperu_mpmath(mp.mpf(a), 1 - mp.mpf(d), -mp.mpf(t))


def log_abs_u2_mpmath(a: float, d: float, t: np.ndarray) -> np.ndarray:
    """log|U(a, 1-d, -t)|^2 point by point with mpmath (slow: ~1-100 ms per point); NaN where mpmath fails."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(t.shape, np.nan)
    for i, ti in np.ndenumerate(t):
        try:
            out[i] = float(2 * mp.log(abs(u_mpmath(a, d, ti))))
        except (ValueError, ZeroDivisionError, mp.libmp.NoConvergence):
            pass
    return out
