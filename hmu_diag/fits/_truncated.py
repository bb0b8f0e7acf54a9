"""Maximum likelihood for the continuous power law truncated to [x_min, x_max] (vectorised).

Density p(x) = (alpha-1) x^(-alpha) / (x_min^(1-alpha) - x_max^(1-alpha)) on [x_min, x_max].
With y = ln(x/x_min), L = ln(x_max/x_min), b = alpha - 1 and u = b L, y follows an exponential
distribution of rate b truncated to [0, L], so the score equation for k points with mean
ybar = sum(y)/k is

    E_b[y] = L * h(u) = ybar,      h(u) = 1/u - 1/(e^u - 1)   (h(0) = 1/2),

h decreasing from 1 (u -> -inf) to 0 (u -> inf), so the MLE exists and is unique for 0 < ybar < L
(it has alpha < 1 when ybar > L/2).  Fisher information per point: Var_b[y] = L^2 * (-h'(u)), with
-h'(u) = 1/u^2 - e^u/(e^u - 1)^2; the standard error of alpha is 1/sqrt(k Var_b[y]), which reduces to
(alpha-1)/sqrt(k) as L -> inf.
"""
from __future__ import annotations

import numpy as np

_SERIES = 1e-3


def _h(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h(u) and -h'(u), with the Taylor series near 0 (error < 1e-16)."""
    small = np.abs(u) < _SERIES
    us = np.where(small, 1.0, u)
    with np.errstate(over="ignore"):
        em = np.expm1(us)
        ratio = np.where(np.isinf(em), 0.0, np.exp(us) / em**2)
        h = 1.0 / us - 1.0 / em
        dh = 1.0 / us**2 - ratio
    h = np.where(small, 0.5 - u / 12.0 + u**3 / 720.0, h)
    dh = np.where(small, 1.0 / 12.0 - u**2 / 240.0, dh)
    return h, dh


def truncated_mle(ybar: np.ndarray, L: np.ndarray) -> np.ndarray:
    """alpha solving L*h((alpha-1)L) = ybar (nan where 0 < ybar < L fails)."""
    ybar = np.asarray(ybar, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    ok = (ybar > 0) & (ybar < L) & np.isfinite(L)
    q = np.where(ok, ybar / np.where(ok, L, 1.0), 0.5)
    # bracket in u: h(u) ~ 1/u for large u, ~ 1 + 1/u for large negative u
    lo = np.where(q < 0.5, 0.0, -1.0 / np.maximum(1.0 - q, 1e-300) - 2.0)
    hi = np.where(q < 0.5, 1.0 / np.maximum(q, 1e-300) + 2.0, 0.0)
    u = np.clip(np.where(q < 0.5, 1.0 / q - 2.0, -1.0 / (1.0 - q) + 2.0), lo, hi)
    for _ in range(200):
        h, dh = _h(u)
        f = h - q                      # decreasing in u
        lo = np.where(f > 0, u, lo)
        hi = np.where(f <= 0, u, hi)
        step = u + f / dh
        inside = (step > lo) & (step < hi) & np.isfinite(step)
        new = np.where(inside, step, 0.5 * (lo + hi))
        if np.all(np.abs(new - u) <= 1e-15 * np.maximum(1.0, np.abs(u))):
            u = new
            break
        u = new
    return np.where(ok, 1.0 + u / np.where(ok, L, 1.0), np.nan)


def truncated_stderr(alpha: np.ndarray, L: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Asymptotic standard error 1/sqrt(k Var[y]) of the truncated MLE."""
    _, dh = _h((alpha - 1.0) * L)
    return 1.0 / np.sqrt(k * L**2 * dh)
