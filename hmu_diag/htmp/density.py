"""HTMP density, CDF, survival function, Stieltjes transform and moments (vectorised over x).

Parametrisation (research note htmp.md Sec. 2.2-3.1): aspect ratio ``gamma = M/N in (0, 1]``, repulsion
``kappa > 0`` (``np.inf`` = Marchenko-Pastur), ``scale = sigma^2 = E[lambda]``.  With

    a = kappa/2,  s = kappa/(2 gamma),  delta = s - a = kappa (1 - gamma)/(2 gamma),  theta = s/scale,  t = theta x,

the density of HTMP(gamma, kappa, scale) on (0, inf) is (Eq. E.5 of Hodgkinson, Wang & Mahoney 2025)

    rho(x) = theta t^(delta-1) e^(-t) / [Gamma(1 + a) Gamma(s) |U(a, 1 - delta, -t)|^2]

and its CDF is F(x) = |arg U(a, 1 - delta, -t - i0) - arg U(..., 0)| / (pi a) (continuous branch of the phase).

Orientation ``"inverse"`` describes mu = 1/lambda where lambda ~ HTMP(gamma, kappa, scale): ``scale`` stays the
mean of the underlying HTMP variable lambda (so E[mu] = theta/(delta - 1), not ``scale``), and

    pdf_inv(mu) = pdf(1/mu)/mu^2,  F_inv(mu) = 1 - F(1/mu),  upper tail pdf_inv(mu) ~ C mu^(-(1 + delta)).

Numerics: a vectorised scipy path (connection formula, hmu_diag.htmp._kummer) with a conditioning estimate; points it
cannot resolve go to the phase-amplitude ODE table (hmu_diag.htmp._table) or to mpmath.  The CDF uses the exact
phase on an adaptively refined grid (hmu_diag.htmp._phasegrid), else the ODE table.  For kappa >= KAPPA_MP = 200
the Marchenko-Pastur closed forms are used (sup|F_HTMP - F_MP| ~ 0.45/kappa, 2e-3 there; see KAPPA_MP).  Inside fits
(:func:`hmu_diag.htmp._accuracy.fit_mode`) the CDF comes from tabulated quantiles or an interpolation across
near-integer delta, to 1e-4 (hmu_diag.htmp._accuracy).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special as sp

from hmu_diag.errors import HmuDiagError
from hmu_diag.htmp import _quantile_table, _table
from hmu_diag.htmp._checks import as_points, check_gamma, check_kappa, check_orientation, check_scale
from hmu_diag.htmp._accuracy import in_fit_mode
from hmu_diag.htmp._kummer import (INT_GAP, fast_applicable, hyp1f1, log_abs_u2_fast, log_abs_u2_large_t,
                                   log_abs_u2_mpmath)
from hmu_diag.htmp.mp import cdf_sf_rows, mp_cdf, mp_logpdf, mp_moment, mp_sf

__all__ = ["KAPPA_MP", "pdf", "logpdf", "cdf", "sf", "stieltjes", "moments", "mean", "var", "params"]

#: kappa at and above which the Marchenko-Pastur closed forms replace HTMP (kappa = inf is MP exactly).
#: Measured (sup over x of |F_HTMP - F_MP|, gamma in {0.1, 0.3255, 0.5, 0.9}): 7.3-8.9e-3 at kappa = 50,
#: 3.8-4.6e-3 at 100, 2.0-2.3e-3 at 200, 8.4-9.0e-4 at 500, 4.5e-4 at 1000, i.e. ~0.45/kappa for every gamma.
#: At 200 the CDFs agree to 2e-3 (display precision of a KS distance or of a plotted CDF) and an exact HTMP
#: evaluation still costs < ~10 s per (gamma, kappa); beyond it the cost grows to minutes (mpmath start values,
#: gamma = 0.1: 11 s at 200, 92 s at 500) while the gap to MP shrinks only as 1/kappa.  Same cut as the
#: authors' follow-up code (kappa_max = 200).
KAPPA_MP = 200.0


def params(gamma: float, kappa: float) -> dict[str, float]:
    """Derived parameters ``a = kappa/2, s = kappa/(2 gamma), delta = s - a`` (unit scale; theta = s/scale)."""
    a = kappa / 2.0
    s = kappa / (2.0 * gamma)
    return {"a": a, "s": s, "delta": s - a}


# ----------------------------------------------------------------------------------------------------------------
# unit-scale kernels on x > 0 (finite); gamma, kappa already checked, kappa < KAPPA_MP
# ----------------------------------------------------------------------------------------------------------------

def _robust_log_u2(gamma: float, kappa: float, t: np.ndarray) -> np.ndarray:
    """log|U|^2 where the fast path failed: the (cached) ODE table, the large-t expansion above it, else mpmath."""
    p = params(gamma, kappa)
    table = _table.phase_table(gamma, kappa)
    tau = np.log(t)
    out = np.full(t.shape, np.nan)
    inside = (tau >= table.tau_lo) & (tau <= table.tau_hi)
    if inside.any():
        out[inside] = 2.0 * table.state(tau[inside])[0]
    above = tau > table.tau_hi
    if above.any():
        out[above] = log_abs_u2_large_t(p["a"], p["delta"], t[above])
    rest = ~np.isfinite(out)
    if rest.any():
        out[rest] = log_abs_u2_mpmath(p["a"], p["delta"], t[rest])
    if not np.isfinite(out).all():
        bad = t[~np.isfinite(out)][0] / p["s"]
        raise HmuDiagError(f"htmp: cannot evaluate the density for gamma={gamma:g}, kappa={kappa:g} at x={bad:g}")
    return out


def _log_u2(gamma: float, kappa: float, t: np.ndarray) -> np.ndarray:
    p = params(gamma, kappa)
    out, ok = log_abs_u2_fast(p["a"], p["delta"], t)
    if not ok.all():
        out = out.copy()
        out[~ok] = _robust_log_u2(gamma, kappa, t[~ok])
    return out


def _logpdf_unit(x: np.ndarray, gamma: float, kappa: float) -> np.ndarray:
    if kappa >= KAPPA_MP:
        return mp_logpdf(x, gamma, 1.0)
    p = params(gamma, kappa)
    a, s, d = p["a"], p["s"], p["delta"]
    t = s * x
    return (math.log(s) - sp.gammaln(a + 1.0) - sp.gammaln(s) + (d - 1.0) * np.log(t) - t
            - _log_u2(gamma, kappa, t))


def _phase_below(gamma: float, kappa: float, t: np.ndarray) -> np.ndarray:
    """Phase arg U(a, 1-delta, -t - i0) in the first quarter turn (small t): arcsin(pi B/|U|)."""
    p = params(gamma, kappa)
    a, s, d = p["a"], p["s"], p["delta"]
    with np.errstate(all="ignore"):
        log_b = d * np.log(t) + np.log(np.abs(hyp1f1(s, 1.0 + d, -t))) - sp.gammaln(a) - sp.gammaln(1.0 + d)
    ratio = np.pi * np.exp(log_b - 0.5 * _log_u2(gamma, kappa, t))
    return np.arcsin(np.minimum(ratio, 1.0))


def _cdf_sf_unit(x: np.ndarray, gamma: float, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """(F, 1 - F) at unit scale for finite x > 0."""
    if kappa >= KAPPA_MP:
        return mp_cdf(x, gamma, 1.0), mp_sf(x, gamma, 1.0)
    from hmu_diag.htmp import _phasegrid

    p = params(gamma, kappa)
    a, s = p["a"], p["s"]
    if in_fit_mode():
        tabulated = _quantile_table.cdf_sf(x, gamma, kappa)
        if tabulated is not None:
            return tabulated
        if not fast_applicable(p["delta"]):
            return _cdf_sf_across_integer(x, gamma, p["delta"])
    total = math.pi * a
    t = s * x
    phase = _phasegrid.phase(gamma, kappa, t)
    if phase is None:
        table = _table.phase_table(gamma, kappa)
        tau = np.log(t)
        phase = np.empty_like(t)
        below = tau < table.tau_lo
        above = tau > table.tau_hi
        mid = ~below & ~above
        if mid.any():
            phase[mid] = table.state(tau[mid])[2]
        if below.any():
            phase[below] = _phase_below(gamma, kappa, t[below])
        phase[above] = total
    phase = np.clip(phase, 0.0, total)
    return phase / total, (total - phase) / total


def cdf_sf_many(x: np.ndarray, gammas, kappas, scales) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(F, 1 - F, ok)`` of HTMP(gammas[i], kappas[i], scales[i]) at the finite points ``x[i]`` > 0 of a 2-D array (one
    row per law; kappa = inf: Marchenko-Pastur), for many laws at once.  Validated parameters are assumed (the fits
    pass their own).

    In fit mode the laws the quantile table covers are evaluated together (:func:`_quantile_table.cdf_sf_many`); the
    others one by one, as :func:`cdf` would.  A law that cannot be evaluated within the current limits
    (:class:`~hmu_diag.errors.HmuDiagError`) has ``ok`` False and a NaN row instead of stopping the others.
    """
    unit = np.asarray(x, dtype=np.float64) / np.asarray(scales, dtype=np.float64)[:, None]
    gammas, kappas = np.asarray(gammas, dtype=np.float64), np.asarray(kappas, dtype=np.float64)
    F, Q = np.full(unit.shape, np.nan), np.full(unit.shape, np.nan)
    ok = np.zeros(unit.shape[0], dtype=bool)
    mp = kappas >= KAPPA_MP                  # closed form, all together
    if mp.any():
        F[mp], Q[mp] = cdf_sf_rows(unit[mp], gammas[mp], np.ones(int(mp.sum())))
        ok[mp] = True
    if in_fit_mode():
        rows = np.flatnonzero(~mp)
        F[rows], Q[rows], ok[rows] = _quantile_table.cdf_sf_many(unit[rows], gammas[rows], kappas[rows])
    for i in np.flatnonzero(~ok).tolist():
        try:
            F[i], Q[i] = _cdf_sf_unit(unit[i], float(gammas[i]), float(kappas[i]))
            ok[i] = True
        except HmuDiagError:
            pass
    return F, Q, ok


#: offsets (in delta) of the interpolation nodes around an integer delta, in units of INT_GAP
_NODE_OFFSETS = np.array([-4.0, -2.0, 2.0, 4.0])


def _cdf_sf_across_integer(x: np.ndarray, gamma: float, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit mode, delta within INT_GAP of an integer n >= 1: (F, 1 - F) by cubic Lagrange interpolation in delta (at
    fixed gamma, kappa = 2 gamma delta/(1 - gamma)) through delta_j = n -+ 2 INT_GAP, n -+ 4 INT_GAP, where the
    connection formula applies.  F and 1 - F are interpolated separately with the same weights (which sum to 1), so
    the upper tail keeps its relative accuracy.  Error <= max|w(delta)| |d^4 F/d delta^4| / 24 with
    |w| = prod|delta - delta_j| <= 4e-4: measured < 5e-5 (largest at n = 1; tests/test_htmp_density.py)."""
    nodes = round(d) + INT_GAP * _NODE_OFFSETS
    weights = np.array([np.prod([(d - other) / (node - other) for other in nodes if other != node])
                        for node in nodes])
    f = np.zeros_like(x)
    q = np.zeros_like(x)
    for node, weight in zip(nodes, weights):
        f_j, q_j = _cdf_sf_unit(x, gamma, 2.0 * gamma * node / (1.0 - gamma))
        f += weight * f_j
        q += weight * q_j
    return np.clip(f, 0.0, 1.0), np.clip(q, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------

def _setup(x, gamma, kappa, scale, orientation, where):
    g = check_gamma(gamma, where)
    k = check_kappa(kappa, where)
    sc = check_scale(scale, where)
    check_orientation(orientation, where)
    xx = as_points(x, where)
    if orientation == "direct":
        y = xx / sc
    else:
        with np.errstate(divide="ignore"):
            y = np.where(xx > 0, 1.0 / (xx * sc), -1.0)
    return g, k, sc, xx, y


def logpdf(x, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> np.ndarray:
    """Log density of HTMP(gamma, kappa, scale) at x (``-inf`` for x <= 0 or x = inf).

    Direct: ``log rho(x) = log theta + (delta-1) log t - t - lnGamma(1+a) - lnGamma(s) - log|U(a,1-delta,-t)|^2``,
    t = theta x, theta = kappa/(2 gamma scale).  Inverse: ``logpdf(1/mu) - 2 log mu`` (scale = mean of 1/mu's
    underlying HTMP variable lambda = 1/mu).  Accurate to ~1e-10 relative (fast path <= 1e-12 where it applies).
    """
    g, k, sc, xx, y = _setup(x, gamma, kappa, scale, orientation, "htmp.logpdf")
    out = np.full(xx.shape, -np.inf)
    good = (y > 0) & np.isfinite(y)
    if good.any():
        val = _logpdf_unit(y[good], g, k) - math.log(sc)
        if orientation == "inverse":
            val = val - 2.0 * np.log(xx[good])
        out[good] = val
    return out if out.ndim else float(out)


def pdf(x, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> np.ndarray:
    """Density of HTMP(gamma, kappa, scale) (``exp(logpdf)``; see :func:`logpdf` for the formula).

    ``pdf_scale(x) = pdf_1(x/scale)/scale``; ``orientation="inverse"``: density of mu = 1/lambda,
    ``pdf_inv(mu) = pdf(1/mu)/mu^2`` with ``scale`` the mean of lambda.  ``kappa=np.inf``: Marchenko-Pastur.
    """
    return np.exp(logpdf(x, gamma, kappa, scale, orientation))


def cdf(x, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> np.ndarray:
    """CDF F(x) = |arg U(a, 1-delta, -theta x - i0) - arg U(a, 1-delta, 0)| / (pi kappa/2) (absolute error < 1e-10).

    ``orientation="inverse"``: F_inv(mu) = 1 - F(1/mu) (scale = mean of the underlying lambda = 1/mu).
    """
    g, k, sc, xx, y = _setup(x, gamma, kappa, scale, orientation, "htmp.cdf")
    lo_val, hi_val = (0.0, 1.0) if orientation == "direct" else (1.0, 0.0)
    out = np.where(y <= 0, lo_val, hi_val).astype(np.float64)   # y <= 0 / y = inf
    good = (y > 0) & np.isfinite(y)
    if orientation == "inverse":
        out = np.where(xx <= 0, 0.0, np.where(np.isinf(xx), 1.0, out))
    if good.any():
        f, q = _cdf_sf_unit(y[good], g, k)
        out[good] = f if orientation == "direct" else q
    return out if out.ndim else float(out)


def sf(x, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> np.ndarray:
    """Survival function 1 - F(x) (computed directly from the phase, not as 1 - cdf)."""
    g, k, sc, xx, y = _setup(x, gamma, kappa, scale, orientation, "htmp.sf")
    out = np.where(y <= 0, 1.0, 0.0)
    if orientation == "inverse":
        out = np.where(xx <= 0, 1.0, np.where(np.isinf(xx), 0.0, 1.0 - out))
    good = (y > 0) & np.isfinite(y)
    if good.any():
        f, q = _cdf_sf_unit(y[good], g, k)
        out[good] = q if orientation == "direct" else f
    return out if out.ndim else float(out)


def stieltjes(z, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> np.ndarray:
    """Stieltjes transform S(z) = E[1/(lambda + z)] for z > 0.

    Direct (htmp.md Sec. 3.3): ``S(z) = theta U(a+1, 2-delta, theta z) / U(a, 1-delta, theta z)`` (scipy hyperu on
    the positive axis, mpmath where that is not finite); MP limit: the positive root of
    ``gamma scale z S^2 + (z + (1-gamma) scale) S - 1 = 0``.  Inverse: ``S_inv(z) = 1/z - S(1/z)/z^2``.
    """
    g = check_gamma(gamma, "htmp.stieltjes")
    k = check_kappa(kappa, "htmp.stieltjes")
    sc = check_scale(scale, "htmp.stieltjes")
    check_orientation(orientation, "htmp.stieltjes")
    zz = as_points(z, "htmp.stieltjes")
    if not (zz > 0).all():
        raise HmuDiagError("htmp.stieltjes: z must be > 0 (S(z) = E[1/(lambda + z)] on the positive axis)")
    w = zz if orientation == "direct" else 1.0 / zz
    if k >= KAPPA_MP:
        c = w + (1.0 - g) * sc
        val = 2.0 / (c + np.sqrt(c * c + 4.0 * g * sc * w))      # rationalised positive root
    else:
        import mpmath as mp

        p = params(g, k)
        a, d, theta = p["a"], p["delta"], p["s"] / sc
        with np.errstate(all="ignore"):
            val = theta * sp.hyperu(a + 1.0, 2.0 - d, theta * w) / sp.hyperu(a, 1.0 - d, theta * w)
        bad = ~(np.isfinite(val) & (val > 0))
        for i in zip(*np.nonzero(bad)) if val.ndim else ([()] if bad else []):
            with mp.workdps(30):
                tz = theta * mp.mpf(float(w[i]))
                val[i] = float(theta * mp.hyperu(a + 1, 2 - mp.mpf(d), tz) / mp.hyperu(a, 1 - mp.mpf(d), tz))
    if orientation == "inverse":
        val = 1.0 / zz - val / zz ** 2
    return val if np.ndim(val) else float(val)


def _moment_sequence(kmax: int, gamma: float, kappa: float, scale: float) -> np.ndarray:
    """m_0..m_kmax by theta m_{k+1} = (k + delta) m_k + (kappa/2) sum_{i=0}^k m_i m_{k-i} (htmp.md Sec. 3.3)."""
    p = params(gamma, kappa)
    a, d, theta = p["a"], p["delta"], p["s"] / scale
    m = np.zeros(kmax + 1)
    m[0] = 1.0
    for j in range(kmax):
        m[j + 1] = ((j + d) * m[j] + a * np.dot(m[: j + 1], m[j::-1])) / theta
    return m


def _negative_moment_sequence(kmax: int, gamma: float, kappa: float, scale: float) -> np.ndarray:
    """E[lambda^-1..-kmax] from the Riccati equation z S' - a z S^2 + (1 - delta - theta z) S + theta = 0 expanded
    at z = 0: with S(z) = sum_j c_j z^j, c_j = (-1)^j E[lambda^-(j+1)], c_0 = theta/(delta - 1) and
    c_j = (a sum_{i<j} c_i c_{j-1-i} + theta c_{j-1}) / (j + 1 - delta); E[lambda^-k] is finite iff k < delta."""
    p = params(gamma, kappa)
    a, d, theta = p["a"], p["delta"], p["s"] / scale
    c = np.full(kmax, np.inf)
    for j in range(kmax):
        if not (j + 1 < d):
            break
        if j == 0:
            c[0] = theta / (d - 1.0)
        else:
            c[j] = (a * np.dot(c[:j], c[j - 1::-1]) + theta * c[j - 1]) / (j + 1.0 - d)
    return np.abs(c)


def moments(k, gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct"):
    """Raw moments E[X^k] for integer k (scalar or array; negative k allowed; ``inf`` where the moment diverges).

    Direct, k >= 0: recursion ``theta m_{k+1} = (k + delta) m_k + (kappa/2) sum_{i=0}^k m_i m_{k-i}``, m_0 = 1
    (so E[lambda] = scale, E[lambda^2] = scale^2 (1 + gamma + 2 gamma/kappa)).  k < 0: the Riccati expansion of the
    Stieltjes transform at 0 (E[1/lambda] = theta/(delta - 1), finite iff -k < delta).  Inverse orientation:
    E[mu^k] = E[lambda^-k].  kappa = inf: Marchenko-Pastur moments.
    """
    g = check_gamma(gamma, "htmp.moments")
    kap = check_kappa(kappa, "htmp.moments")
    sc = check_scale(scale, "htmp.moments")
    check_orientation(orientation, "htmp.moments")
    karr = np.asarray(k)
    if not np.issubdtype(karr.dtype, np.integer) and not np.all(np.equal(np.mod(karr, 1), 0)):
        raise HmuDiagError(f"htmp.moments: k must be integers, got {k!r}")
    kk = karr.astype(int) * (1 if orientation == "direct" else -1)
    pos_max = int(max(kk.max(initial=0), 0))
    neg_max = int(max(-kk.min(initial=0), 0))
    if kap == math.inf:
        pos = np.array([mp_moment(j, g, sc) for j in range(pos_max + 1)])
        # negative MP moments: the same Riccati recursion, which has a finite kappa -> inf limit, at kappa = 1e300
        neg = _negative_moment_sequence(neg_max, g, 1e300, sc)
    else:
        pos = _moment_sequence(pos_max, g, kap, sc)
        neg = _negative_moment_sequence(neg_max, g, kap, sc)
    out = np.where(kk >= 0, pos[np.clip(kk, 0, None)], neg[np.clip(-kk - 1, 0, None)] if neg_max else np.inf)
    return out if out.ndim else float(out)


def mean(gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> float:
    """Mean: ``scale`` (direct); ``theta/(delta - 1)`` = E[1/lambda] (inverse, inf if delta <= 1)."""
    return float(moments(1, gamma, kappa, scale, orientation))


def var(gamma: float, kappa: float, scale: float = 1.0, orientation: str = "direct") -> float:
    """Variance: ``gamma scale^2 (1 + 2/kappa)`` (direct); E[lambda^-2] - E[lambda^-1]^2 (inverse, inf if delta <= 2)."""
    m1, m2 = moments([1, 2], gamma, kappa, scale, orientation)
    return float(m2 - m1 * m1) if np.isfinite(m2) else math.inf
