"""Robust HTMP evaluation by integrating Kummer's equation in phase-amplitude form.

With t = s x (s = kappa/(2 gamma)), a = kappa/2, delta = s - a and y(t) = U(a, 1 - delta, -t - i0), Kummer's
equation reads t y'' + (1 - delta + t) y' + a y = 0.  Write y = R e^{i phi} and tau = log t.  The complex log
derivative t y'/y = u + i w solves a Riccati equation whose imaginary part integrates in closed form (Abel/Wronskian):

    dL/dtau   = u                                            (L = log R = log|U|)
    du/dtau   = -u^2 + w^2 + (delta - t) u - a t
    dphi/dtau = w = K t^delta e^{-t - 2L},  K = pi / (Gamma(a) Gamma(s)).

The density and CDF of HTMP(gamma, kappa, scale 1) follow (research note htmp.md Sec. 3.1, 3.5):

    log rho(x) = log s - lnGamma(1 + a) - lnGamma(s) + (delta - 1) log t - t - 2 L(tau),
    F(x)       = (phi(tau) - phi(0)) / (pi a)                 (total phase change pi a = pi kappa / 2).

The solve starts in the bulk (x = 1) from U and U' (connection formula, else mpmath; at gamma = 1 below the bulk, from
the logarithmic series) and runs backwards to the lower tail and forwards to the upper tail; in both directions the
solution carries the dominant component, so the integration is stable for every delta (integer or not) and for
parameters where scipy's hyp1f1 overflows.  The phase below the
table is arcsin(pi B / R) with B = t^delta M(s, 1 + delta, -t) / (Gamma(a) Gamma(1 + delta)) = Im U / pi (first
quarter turn).  The total phase pi a is checked against the integral.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from scipy import special as sp

from hmu_diag.errors import HmuDiagError
from hmu_diag.htmp._accuracy import FIT_ATOL, FIT_RTOL, in_fit_mode
from hmu_diag.htmp._kummer import connection_parts, fast_applicable, hyp1f1, hyperu_mpmath, u_mpmath

#: ODE tolerances (relative, absolute); the resulting log-density error is ~1e-11 in the bulk
RTOL, ATOL = 1e-12, 1e-13
#: probability mass left outside the table on each side (the lower side is added back analytically)
TAIL_MASS = 1e-30
#: largest accepted |total phase / (pi a) - 1|
NORM_TOL = 1e-8
#: calls of PhaseTable.state answered by integrating through the points; later ones use the dense solution
_POINTWISE_CALLS = 2
#: LSODA step limit per integration (the widest lower tails, delta -> 0, take a few thousand steps)
_MAX_STEPS = 200_000


@dataclass
class PhaseTable:
    """The phase-amplitude ODE for HTMP(gamma, kappa) at scale 1, in tau = log(s x): start values and solutions.

    The first ``_POINTWISE_CALLS`` calls of :meth:`state` integrate from the bulk point ``tau_c`` through the
    requested points to both ends of ``[tau_lo, tau_hi]`` (LSODA, ``scipy.integrate.odeint``: one Fortran call per
    direction, 10-30x faster than building a dense solution), which is all a fit needs.  Later calls (plots,
    quadrature, loops over x) use a dense DOP853 solution (``solve_ivp``), built once and kept.
    """

    a: float
    s: float
    d: float
    log_k: float
    tau_c: float
    tau_lo: float
    tau_hi: float
    L0: float
    u0: float
    log_b_lo: float        # log B(t_lo), B = Im U / pi, which fixes the phase at tau_lo (first quarter turn)
    calls: int = 0
    dense: tuple | None = None   # (lower OdeSolution, upper OdeSolution, phase offset)

    def _integrate(self, taus: np.ndarray) -> np.ndarray:
        """States (L, u, phi - phi(tau_c)) at ``taus`` (monotone, starting at tau_c); shape (len, 3)."""
        from scipy.integrate import odeint   # imported on first use (most fits read the quantile table instead)
        rtol, atol = (FIT_RTOL, FIT_ATOL) if in_fit_mode() else (RTOL, ATOL)
        y = odeint(_rhs(self.a, self.d, self.log_k), [self.L0, self.u0, 0.0], taus, tfirst=True, rtol=rtol,
                   atol=atol, mxstep=_MAX_STEPS)
        if not np.isfinite(y).all():
            raise HmuDiagError(f"htmp: ODE integration failed (a={self.a:g}, delta={self.d:g})")
        return y

    def _offset(self, L_lo: float, phi_at_lo: float, phi_at_hi: float) -> float:
        """Absolute-phase offset from the states at tau_lo and tau_hi, after checking the total phase pi a."""
        # phase below tau_lo: first quarter turn, sin(phi) = pi B / R with R = e^L
        offset = math.asin(min(1.0, math.pi * math.exp(self.log_b_lo - L_lo))) - phi_at_lo
        norm_error = (phi_at_hi + offset) / (math.pi * self.a) - 1.0
        if not abs(norm_error) < NORM_TOL:
            raise HmuDiagError(f"htmp: numerical failure for a={self.a:g}, delta={self.d:g}: total probability "
                               f"{1 + norm_error:.10f} != 1")
        return offset

    def state(self, tau: np.ndarray) -> np.ndarray:
        """(L, u, phi_abs) at tau (inside [tau_lo, tau_hi]; beyond it the solution is continued); shape (3,) + shape.

        Raises HmuDiagError when the total phase misses pi a by more than NORM_TOL (relative).
        """
        tau = np.asarray(tau, dtype=np.float64)
        self.calls += 1
        out = self._through_points(tau.ravel()) if self.calls <= _POINTWISE_CALLS else self._dense_state(tau.ravel())
        return out.reshape((3,) + tau.shape)

    def _through_points(self, flat: np.ndarray) -> np.ndarray:
        lo = flat <= self.tau_c
        # each direction runs through its (sorted) points and its end of the range, past it if a point lies beyond
        down = np.unique(np.append(flat[lo], self.tau_lo))[::-1]
        up = np.unique(np.append(flat[~lo], self.tau_hi))
        lower = self._integrate(np.concatenate([[self.tau_c], down]))[1:]
        upper = self._integrate(np.concatenate([[self.tau_c], up]))[1:]
        L_lo, _, phi_at_lo = lower[np.searchsorted(-down, -self.tau_lo)]
        offset = self._offset(L_lo, phi_at_lo, upper[np.searchsorted(up, self.tau_hi), 2])
        out = np.empty((3, flat.size))
        out[:, lo] = lower[np.searchsorted(-down, -flat[lo])].T
        out[:, ~lo] = upper[np.searchsorted(up, flat[~lo])].T
        out[2] += offset
        return out

    def _dense_state(self, flat: np.ndarray) -> np.ndarray:
        if self.dense is None:
            rhs = _rhs(self.a, self.d, self.log_k)
            lower = _solve(rhs, [self.L0, self.u0, 0.0], self.tau_c, self.tau_lo)
            upper = _solve(rhs, [self.L0, self.u0, 0.0], self.tau_c, self.tau_hi)
            offset = self._offset(float(lower.y[0, -1]), float(lower.y[2, -1]), float(upper.y[2, -1]))
            self.dense = (lower.sol, upper.sol, offset)
        lower, upper, offset = self.dense
        out = np.empty((3, flat.size))
        lo = flat <= self.tau_c
        if lo.any():
            out[:, lo] = lower(flat[lo])
        if (~lo).any():
            out[:, ~lo] = upper(flat[~lo])
        out[2] += offset
        return out


def _solve(rhs, y0, tau0: float, tau1: float):
    from scipy.integrate import solve_ivp
    sol = solve_ivp(rhs, (tau0, tau1), y0, method="DOP853", rtol=RTOL, atol=ATOL, dense_output=True)
    if not sol.success:
        raise HmuDiagError(f"htmp: ODE integration failed ({sol.message})")
    return sol


def _rhs(a: float, d: float, log_k: float):
    def rhs(tau, y):
        L, u, _ = y
        t = math.exp(tau) if tau < 700 else math.inf
        w = math.exp(log_k + d * tau - t - 2.0 * L) if t < math.inf else 0.0
        return [u, -u * u + w * w + (d - t) * u - a * t, w]
    return rhs


def tau_range(a: float, s: float, d: float) -> tuple[float, float]:
    """tau_lo where the lower-tail mass ~ TAIL_MASS (or the double range ends) and tau_hi for the upper tail."""
    floor = math.log(s) + math.log(1e-300)
    if d > 0:
        # F(t) ~ t^d Gamma(s) / (d Gamma(1+a) Gamma(d)^2) as t -> 0 (htmp.md Sec. 3.6)
        lg = math.lgamma(s) - math.log(d) - math.lgamma(1 + a) - 2 * math.lgamma(d)
        tau_lo = max(floor, (math.log(TAIL_MASS) - lg) / d)
    else:
        tau_lo = floor
    # upper tail: rho_t ~ t^{s+a-1} e^{-t} / (Gamma(1+a) Gamma(s)) -> mass Gamma(s+a) Q(s+a, t) / (Gamma(1+a) Gamma(s))
    target = TAIL_MASS * math.exp(math.lgamma(1 + a) + math.lgamma(s) - math.lgamma(s + a))
    target = min(max(target, 1e-300), 0.5)
    t_hi = float(sp.gammainccinv(s + a, target))
    t_hi = 1.5 * t_hi + 20.0
    return min(tau_lo, math.log(s) - 2.0), max(math.log(t_hi), math.log(s) + 1.0)


def _initial_state(a: float, d: float, t_c: float) -> tuple[float, float]:
    """(log|U|, Re t d/dt log U(a, 1-d, -t)) at t_c, using d/dt U(a, b, -t) = a U(a+1, b+1, -t).

    Connection formula (both functions on the same side of the cut) when it is accurate, else mpmath."""
    if fast_applicable(d) and fast_applicable(d - 1.0):
        t = np.array([t_c])
        lu0, err0, re0, im0, big0 = connection_parts(a, d, t)
        lu1, err1, re1, im1, big1 = connection_parts(a + 1.0, d - 1.0, t)
        if max(err0[0], err1[0]) < 1e-11:
            ratio = complex(re1[0], im1[0]) / complex(re0[0], im0[0]) * math.exp(big1[0] - big0[0])
            u = t_c * a * ratio.real
            if math.isfinite(u) and math.isfinite(lu0[0]):
                return 0.5 * float(lu0[0]), u
    with mp.workdps(30):
        u0 = u_mpmath(a, d, t_c)
        u1 = hyperu_mpmath(mp.mpf(a) + 1, 2 - mp.mpf(d), -mp.mpf(t_c))
        ratio = mp.mpf(t_c) * mp.mpf(a) * u1 / u0
        return float(mp.log(abs(u0))), float(mp.re(ratio))


def _initial_state_square(a: float, t: float) -> tuple[float, float]:
    """(log|U|, Re t d/dt log U(a, 1, -t)) at delta = 0 (gamma = 1) from the logarithmic series (DLMF 13.2.9, n = 0):

        U(a, 1, z) = -(1/Gamma(a)) sum_k (a)_k z^k/(k!)^2 [ln z + psi(a + k) - 2 psi(1 + k)],
        z U'(z)    = -(1/Gamma(a)) sum_k (a)_k z^k/(k!)^2 [k (ln z + psi(a + k) - 2 psi(1 + k)) + 1],

    at z = -t - i0 (ln z = ln t - i pi; t d/dt U(a, 1, -t) = z U'(z)).  Callers take a t <= 1/(4 max(a, 1)), where the
    terms fall at least 4x per step from the first: no cancellation, 60 terms reach 1e-30 relative."""
    k = np.arange(60.0)
    log_c = sp.gammaln(a + k) - sp.gammaln(a) - 2.0 * sp.gammaln(k + 1.0) + k * math.log(t)
    terms = np.exp(log_c) * (-1.0) ** k
    log_z = complex(math.log(t), -math.pi)
    bracket = log_z + sp.digamma(a + k) - 2.0 * sp.digamma(k + 1.0)
    u_sum = np.sum(terms * bracket)
    du_sum = np.sum(terms * (k * bracket + 1.0))
    return math.log(abs(u_sum)) - math.lgamma(a), (du_sum / u_sum).real


@functools.lru_cache(maxsize=256)
def phase_table(gamma: float, kappa: float) -> PhaseTable:
    """Start values (cached) of the phase-amplitude solution for HTMP(gamma, kappa) at unit scale.

    The solve starts at the bulk point t = s, except for gamma = 1 (delta = 0, where the connection formula is 0/0):
    there it starts at t = min(s, 1/(4 max(a, 1))) from the logarithmic series, which needs no mpmath."""
    a = kappa / 2.0
    s = kappa / (2.0 * gamma)
    d = s - a
    if d == 0.0:
        t_c = min(s, 0.25 / max(a, 1.0))
        L0, u0 = _initial_state_square(a, t_c)
        return _make_table(a, s, d, t_c, L0, u0)
    try:
        L0, u0 = _initial_state(a, d, s)
    except (ValueError, ZeroDivisionError, mp.libmp.NoConvergence) as exc:
        raise HmuDiagError(f"htmp: cannot evaluate U(a, b, z) for gamma={gamma:g}, kappa={kappa:g} "
                           f"(delta={d:g}): {exc}".splitlines()[0]) from None
    return _make_table(a, s, d, s, L0, u0)


def _make_table(a: float, s: float, d: float, t_c: float, L0: float, u0: float) -> PhaseTable:
    """The PhaseTable for start values (L0, u0) at t_c: integration range and the lower-end phase reference."""
    log_k = math.log(math.pi) - math.lgamma(a) - math.lgamma(s)
    tau_lo, tau_hi = tau_range(a, s, d)
    t_lo = math.exp(tau_lo)
    with np.errstate(all="ignore"):
        log_b = (d * tau_lo + math.log(abs(float(hyp1f1(s, 1 + d, np.array(-t_lo))))) - math.lgamma(a)
                 - math.lgamma(1 + d))
    return PhaseTable(a=a, s=s, d=d, log_k=log_k, tau_c=math.log(t_c), tau_lo=tau_lo, tau_hi=tau_hi, L0=L0, u0=u0,
                      log_b_lo=log_b)
