"""Robust HTMP evaluation by integrating Kummer's equation in phase-amplitude form (one ODE solve per (gamma, kappa)).

With t = s x (s = kappa/(2 gamma)), a = kappa/2, delta = s - a and y(t) = U(a, 1 - delta, -t - i0), Kummer's
equation reads t y'' + (1 - delta + t) y' + a y = 0.  Write y = R e^{i phi} and tau = log t.  The complex log
derivative t y'/y = u + i w solves a Riccati equation whose imaginary part integrates in closed form (Abel/Wronskian):

    dL/dtau   = u                                            (L = log R = log|U|)
    du/dtau   = -u^2 + w^2 + (delta - t) u - a t
    dphi/dtau = w = K t^delta e^{-t - 2L},  K = pi / (Gamma(a) Gamma(s)).

The density and CDF of HTMP(gamma, kappa, scale 1) follow (research note htmp.md Sec. 3.1, 3.5):

    log rho(x) = log s - lnGamma(1 + a) - lnGamma(s) + (delta - 1) log t - t - 2 L(tau),
    F(x)       = (phi(tau) - phi(0)) / (pi a)                 (total phase change pi a = pi kappa / 2).

The solve starts in the bulk (x = 1) from U and U' (connection formula, else mpmath) and runs backwards to the lower tail and
forwards to the upper tail; in both directions the solution carries the dominant component, so the integration is
stable for every delta (integer or not) and for parameters where scipy's hyp1f1 overflows.  The phase below the
table is arcsin(pi B / R) with B = t^delta M(s, 1 + delta, -t) / (Gamma(a) Gamma(1 + delta)) = Im U / pi (first
quarter turn).  The total phase pi a is checked against the integral (``norm_error``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from scipy import special as sp
from scipy.integrate import solve_ivp

from hmu_diag.errors import HmuDiagError
from hmu_diag.htmp._kummer import connection_parts, fast_applicable, hyp1f1, u_mpmath

#: ODE tolerances (relative, absolute); the resulting log-density error is ~1e-11 in the bulk
RTOL, ATOL = 1e-12, 1e-13
#: probability mass left outside the table on each side (the lower side is added back analytically)
TAIL_MASS = 1e-30
#: largest accepted |total phase / (pi a) - 1|
NORM_TOL = 1e-8


@dataclass(frozen=True)
class PhaseTable:
    """Dense ODE solution for HTMP(gamma, kappa) at scale 1, in tau = log(s x)."""

    a: float
    s: float
    d: float
    tau_c: float
    tau_lo: float
    tau_hi: float
    lower: object          # OdeSolution on [tau_lo, tau_c]
    upper: object          # OdeSolution on [tau_c, tau_hi]
    phi_lo: float          # phase at tau_lo (continuous branch, phi(0) = 0), relative to phi(tau_c) = 0: phi_abs = phi + off
    offset: float          # add to the integrated phase to get the absolute phase
    norm_error: float

    def state(self, tau: np.ndarray) -> np.ndarray:
        """(L, u, phi_abs) at tau inside [tau_lo, tau_hi]; shape (3,) + tau.shape."""
        tau = np.asarray(tau, dtype=np.float64)
        out = np.empty((3,) + tau.shape)
        lo = tau <= self.tau_c
        if lo.any():
            out[:, lo] = self.lower(tau[lo])
        if (~lo).any():
            out[:, ~lo] = self.upper(tau[~lo])
        out[2] += self.offset
        return out


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
        u1 = mp.hyperu(mp.mpf(a) + 1, 2 - mp.mpf(d), -mp.mpf(t_c), maxterms=10 ** 6, maxprec=20000)
        ratio = mp.mpf(t_c) * mp.mpf(a) * u1 / u0
        return float(mp.log(abs(u0))), float(mp.re(ratio))


def _solve(rhs, y0, tau0: float, tau1: float):
    sol = solve_ivp(rhs, (tau0, tau1), y0, method="DOP853", rtol=RTOL, atol=ATOL, dense_output=True)
    if not sol.success:
        raise HmuDiagError(f"htmp: ODE integration failed ({sol.message})")
    return sol


@functools.lru_cache(maxsize=128)
def phase_table(gamma: float, kappa: float) -> PhaseTable:
    """Build (and cache) the phase-amplitude solution for HTMP(gamma, kappa) at unit scale."""
    a = kappa / 2.0
    s = kappa / (2.0 * gamma)
    d = s - a
    tau_c = math.log(s)
    try:
        L0, u0 = _initial_state(a, d, s)
    except (ValueError, ZeroDivisionError, mp.libmp.NoConvergence) as exc:
        raise HmuDiagError(f"htmp: cannot evaluate U(a, b, z) for gamma={gamma:g}, kappa={kappa:g} "
                           f"(delta={d:g}): {exc}".splitlines()[0]) from None
    log_k = math.log(math.pi) - math.lgamma(a) - math.lgamma(s)
    rhs = _rhs(a, d, log_k)
    tau_lo, tau_hi = tau_range(a, s, d)
    lower = _solve(rhs, [L0, u0, 0.0], tau_c, tau_lo)
    upper = _solve(rhs, [L0, u0, 0.0], tau_c, tau_hi)
    # phase below tau_lo: first quarter turn, sin(phi) = pi B / R
    t_lo = math.exp(tau_lo)
    with np.errstate(all="ignore"):
        log_b = (d * tau_lo + math.log(abs(float(hyp1f1(s, 1 + d, np.array(-t_lo))))) - math.lgamma(a)
                 - math.lgamma(1 + d))
    L_lo = float(lower.y[0, -1])
    phi_lo = math.asin(min(1.0, math.pi * math.exp(log_b - L_lo)))
    offset = phi_lo - float(lower.y[2, -1])
    total = float(upper.y[2, -1]) + offset
    norm_error = total / (math.pi * a) - 1.0
    if not abs(norm_error) < NORM_TOL:
        raise HmuDiagError(f"htmp: numerical failure for gamma={gamma:g}, kappa={kappa:g}: total probability "
                           f"{1 + norm_error:.10f} != 1")
    return PhaseTable(a=a, s=s, d=d, tau_c=tau_c, tau_lo=tau_lo, tau_hi=tau_hi, lower=lower.sol, upper=upper.sol,
                      phi_lo=phi_lo, offset=offset, norm_error=norm_error)
