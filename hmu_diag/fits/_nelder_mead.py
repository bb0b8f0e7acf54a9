"""Vectorised one-dimensional Nelder-Mead, step for step the same as ``scipy.optimize.minimize``.

powerlaw 2.0.0 fits alpha at an x_min candidate with
``scipy.optimize.minimize(nll, x0=[alpha0], bounds=[range], method="Nelder-Mead", tol=1e-4)``
whenever the closed-form estimate alpha0 lies outside (1.5, 3].  hmu_diag.fits.powerlaw does not run it:
started at the exact MLE it ends on alpha0 (1 ulp) in range and at the bound outside it, and this module is
the reference that proves it in the tests (``_REPLAY_ALL``).  It runs that algorithm (scipy 1.17 ``_minimize_neldermead``, N = 1, non-adaptive: reflection
rho = 1, expansion chi = 2, contraction psi = 0.5, shrink sigma = 0.5, initial step 5 %, bounds by
clipping, ``xatol = fatol = tol``, ``maxiter = maxfev = 200``) for many independent problems at once:
each array element is one problem, and every branch of the scalar code is a mask.

In one dimension the simplex is two points (s0 best, s1 worst) and ``fsim[-2]`` is ``fsim[0]``, so a
reflected point is either better than s0 (try expansion) or not (outside contraction if it beats s1,
inside contraction otherwise, shrink towards s0 if the contraction fails).

Difference from scipy, documented: a problem that exhausts ``maxfev`` stops at the end of the
iteration in which it ran out instead of at the exact function call; such problems are reported as
unsuccessful either way (scipy ``warnflag = 1``), and callers treat them as invalid fits.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Objective = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``f(x, idx)``: objective values at points ``x`` for the problems with indices ``idx``."""


def nelder_mead_1d(
    fun: Objective,
    x0: np.ndarray,
    lower: float,
    upper: float,
    *,
    tol: float = 1e-4,
    maxiter: int = 200,
    maxfev: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``len(x0)`` independent 1-D problems; returns ``(x_best, success)``.

    ``fun(x, idx)`` must be vectorised: ``x[i]`` is a trial point of problem ``idx[i]``.
    """
    x0 = np.clip(np.asarray(x0, dtype=np.float64), lower, upper)
    s0 = x0.copy()
    s1 = np.where(x0 != 0, (1 + 0.05) * x0, 0.00025)
    s1 = np.clip(np.where(s1 > upper, 2 * upper - s1, s1), lower, upper)
    everything = np.arange(x0.size)
    f0 = fun(s0, everything)
    f1 = fun(s1, everything)
    nfev = np.full(x0.size, 2)
    nit = np.ones(x0.size, dtype=np.int64)
    swap = f1 < f0
    s0, s1 = np.where(swap, s1, s0), np.where(swap, s0, s1)
    f0, f1 = np.where(swap, f1, f0), np.where(swap, f0, f1)
    success = np.zeros(x0.size, dtype=bool)
    active = everything

    while active.size:
        a0, a1, g0, g1 = s0[active], s1[active], f0[active], f1[active]
        out_of_budget = (nfev[active] >= maxfev) | (nit[active] >= maxiter)
        converged = (np.abs(a1 - a0) <= tol) & (np.abs(g0 - g1) <= tol) & ~out_of_budget
        success[active[converged]] = True
        keep = ~(converged | out_of_budget)
        active, a0, a1, g0, g1 = active[keep], a0[keep], a1[keep], g0[keep], g1[keep]
        if not active.size:
            break

        xr = np.clip(2 * a0 - a1, lower, upper)
        fr = fun(xr, active)
        better = fr < g0                      # try expansion
        outside = ~better & (fr < g1)         # outside contraction
        x2 = np.where(better, 3 * a0 - 2 * a1,
                      np.where(outside, (1 + 0.5) * a0 - 0.5 * a1, (1 - 0.5) * a0 + 0.5 * a1))
        x2 = np.clip(x2, lower, upper)
        f2 = fun(x2, active)
        nfev[active] += 2

        take2 = np.where(better, f2 < fr, np.where(outside, f2 <= fr, f2 < g1))
        new_x = np.where(take2, x2, xr)
        new_f = np.where(take2, f2, fr)
        shrink = ~better & ~take2
        if shrink.any():
            idx = np.flatnonzero(shrink)
            xs = np.clip(a0[idx] + 0.5 * (a1[idx] - a0[idx]), lower, upper)
            new_x[idx] = xs
            new_f[idx] = fun(xs, active[idx])
            nfev[active[idx]] += 1
        nit[active] += 1

        swap = new_f < g0
        s0[active] = np.where(swap, new_x, a0)
        s1[active] = np.where(swap, a0, new_x)
        f0[active] = np.where(swap, new_f, g0)
        f1[active] = np.where(swap, g0, new_f)
    return s0, success
