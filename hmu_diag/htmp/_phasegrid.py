"""Fast exact HTMP CDF: the phase of U(a, 1 - delta, -t - i0) from the connection formula, unwrapped on a grid.

phi(t) = arg U(a, 1 - delta, -t - i0) increases continuously from 0 (t -> 0) to pi a (t -> inf), and
F = phi/(pi a) (research note htmp.md Sec. 3.5).  The wrapped phase atan2(pi B, Re U) is exact at any t where
the fast path (hmu_diag.htmp._kummer) is accurate; only its branch (multiple of 2 pi) needs a grid.  The grid in
tau = log t is refined until every cell advances the phase by less than pi/4, judged by the exact phase rate
dphi/dtau = pi a t rho_t(t) = K t^delta e^{-t} / |U|^2 at both cell ends and by the wrapped increment; the unwrapped
total must equal pi a (to NORM_TOL).  A query t then gets phi = phi_j + (wrapped increment from the grid node
below), which is exact to rounding.  Returns None near a positive integer delta and where the fast path is not
accurate anywhere on the grid; callers then use the ODE table.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special as sp

from hmu_diag.htmp._kummer import connection_parts, fast_applicable
from hmu_diag.htmp._table import NORM_TOL, tau_range
from hmu_diag.htmp.mp import mp_cdf

#: largest accepted error estimate (radians of phase ~ relative error of U): F error <= PHASE_TOL/(pi a)
PHASE_TOL = 1e-8
#: coarsest grid step in tau, and the largest phase advance allowed per cell
_H0 = 0.25
_MAX_STEP = math.pi / 4
_MAX_ROUNDS = 40
_MAX_POINTS = 200_000
#: smallest kappa for which sup|F_HTMP - F_MP| <= 0.48/kappa was measured (_phase_mp_branch)
_KAPPA_BOUND_MIN = 3.0


def _wrapped_and_rate(a: float, d: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wrapped phase in (-pi, pi], phase rate dphi/dtau, ok mask) at t."""
    log_u2, err, re_over_sin, bb, big = connection_parts(a, d, t)
    ok = err < PHASE_TOL
    # U = (pi/sin) (A - e^{i pi d} B) on the -i0 side: Re U / pi = (A - cos B)/sin, Im U / pi = B (common scale)
    wrapped = np.arctan2(bb, re_over_sin)
    s = a + d
    with np.errstate(all="ignore"):
        rate = np.exp(math.log(math.pi) - sp.gammaln(a) - sp.gammaln(s) + d * np.log(t) - t - log_u2)
    ok = ok & np.isfinite(wrapped) & np.isfinite(rate)
    return wrapped, rate, ok


@functools.lru_cache(maxsize=256)
def _grid(a: float, d: float):
    """(tau nodes, wrapped phase, unwrapped phase) or None when the fast path fails somewhere on the grid."""
    tau_lo, tau_hi = tau_range(a, a + d, d)
    n0 = int(math.ceil((tau_hi - tau_lo) / _H0)) + 1
    tau = np.linspace(tau_lo, tau_hi, n0)
    wrapped, rate, ok = _wrapped_and_rate(a, d, np.exp(tau))
    for _ in range(_MAX_ROUNDS):
        if not ok.all() or tau.size > _MAX_POINTS:
            return None
        h = np.diff(tau)
        inc = _cell_increment(np.diff(wrapped))
        flag = (h * np.maximum(rate[:-1], rate[1:]) > _MAX_STEP) | (inc > _MAX_STEP * 1.5)
        flag &= h > 1e-12
        if not flag.any():
            break
        mids = 0.5 * (tau[:-1][flag] + tau[1:][flag])
        w_new, r_new, ok_new = _wrapped_and_rate(a, d, np.exp(mids))
        order = np.argsort(np.concatenate([tau, mids]), kind="stable")
        tau = np.concatenate([tau, mids])[order]
        wrapped = np.concatenate([wrapped, w_new])[order]
        rate = np.concatenate([rate, r_new])[order]
        ok = np.concatenate([ok, ok_new])[order]
    else:
        return None
    inc = _cell_increment(np.diff(wrapped))
    phi = np.concatenate([[np.mod(wrapped[0], 2.0 * np.pi)], np.mod(wrapped[0], 2.0 * np.pi) + np.cumsum(inc)])
    total = math.pi * a
    if not abs(phi[-1] / total - 1.0) < NORM_TOL:
        return None
    return tau, wrapped, phi


def _cell_increment(dw: np.ndarray) -> np.ndarray:
    """True phase advance inside a cell (known to lie in [0, pi/2]) from a wrapped difference."""
    inc = np.mod(dw, 2.0 * np.pi)
    return np.where(inc > 1.5 * np.pi, inc - 2.0 * np.pi, inc).clip(min=0.0)


def _phase_one(a: float, d: float, t: np.ndarray):
    grid = _grid(a, d)
    if grid is None:
        return None
    tau_g, wrapped_g, phi_g = grid
    wrapped, _, ok = _wrapped_and_rate(a, d, t)
    if not ok.all():
        return None
    tau = np.log(t)
    j = np.clip(np.searchsorted(tau_g, tau, side="right") - 1, 0, tau_g.size - 1)
    below = tau < tau_g[0]
    phi = phi_g[j] + _cell_increment(wrapped - wrapped_g[j])
    phi = np.where(below, np.mod(wrapped, 2.0 * np.pi), phi)
    return np.clip(phi, 0.0, math.pi * a)


def _phase_mp_branch(gamma: float, a: float, d: float, t: np.ndarray):
    """The phase at t from its wrapped value alone, the branch (multiple of 2 pi) taken from the Marchenko-Pastur CDF.

    phi = pi a F and sup_x |F_HTMP - F_MP| <= 0.48/kappa (measured for kappa in [3, 180] and gamma in [0.05, 1],
    tests/test_htmp_density.py), so pi a F_MP is within 0.24 pi of phi and rounding (pi a F_MP - wrapped)/(2 pi)
    gives the branch with a 4x margin: no grid is needed.  Returns (phase or None, whether the fast path was accurate
    at every point): None when it was not, or when the result is not monotone in t (then the grid decides)."""
    wrapped, _, ok = _wrapped_and_rate(a, d, t)
    if not ok.all():
        return None, False
    reference = math.pi * a * mp_cdf(t / (a + d), gamma, 1.0)
    phi = np.clip(wrapped + 2.0 * np.pi * np.round((reference - wrapped) / (2.0 * np.pi)), 0.0, math.pi * a)
    # the bound itself checks the fast path: a phase more than 0.3 pi (> 0.24 pi + margin) from the MP reference is a
    # sign error of Re U that the error estimate missed (measured: gamma 0.63, kappa 63, x ~ 6e-3, where both
    # hyp1f1 evaluations of M(a, 1 - delta, .) at delta ~ 18 agree and are wrong): not accurate, the ODE decides
    if 2.0 * a >= _KAPPA_BOUND_MIN and np.any(np.abs(phi - reference) > 0.3 * np.pi):
        return None, False
    order = np.argsort(t, kind="stable")
    return (phi if np.all(np.diff(phi[order]) >= -1e-9 * math.pi * a) else None), True


def phase(gamma: float, kappa: float, t: np.ndarray):
    """Continuous phase arg U(a, 1-delta, -t - i0) (phi(0) = 0) at t > 0, or None if the fast path cannot give it.

    Branch from the Marchenko-Pastur CDF when that is conclusive (:func:`_phase_mp_branch`), else from the grid; None
    at once where the fast path is inaccurate at a requested point (a grid through it would fail too)."""
    a = kappa / 2.0
    d = kappa / (2.0 * gamma) - a
    if not fast_applicable(d):
        return None
    phi, accurate = _phase_mp_branch(gamma, a, d, t)
    if phi is not None or not accurate:
        return phi
    return _phase_one(a, d, t)
