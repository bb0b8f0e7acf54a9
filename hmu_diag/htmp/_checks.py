"""Argument checks shared by the HTMP and Marchenko-Pastur functions (one-line :class:`OptionError` messages)."""
from __future__ import annotations

import math

import numpy as np

from hmu_diag.errors import OptionError

ORIENTATIONS = ("direct", "inverse")


def check_gamma(gamma: float, where: str) -> float:
    """Aspect ratio gamma = M/N (smaller over larger dimension) must lie in (0, 1]."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: gamma must be a number in (0, 1], got {gamma!r}") from None
    if not (0.0 < g <= 1.0):
        raise OptionError(f"{where}: gamma must be in (0, 1] (aspect ratio min/max dimension), got {gamma!r}")
    return g


def check_kappa(kappa: float, where: str) -> float:
    """Repulsion kappa must be > 0; ``np.inf`` selects the Marchenko-Pastur limit."""
    try:
        k = float(kappa)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: kappa must be a positive number or inf, got {kappa!r}") from None
    if not (k > 0.0) or math.isnan(k):
        raise OptionError(f"{where}: kappa must be > 0 (np.inf for Marchenko-Pastur), got {kappa!r}")
    return k


def check_scale(scale: float, where: str) -> float:
    """Scale sigma^2 (mean eigenvalue of the HTMP variable) must be finite and > 0."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: scale must be a positive number, got {scale!r}") from None
    if not (0.0 < s < math.inf):
        raise OptionError(f"{where}: scale must be finite and > 0, got {scale!r}")
    return s


def check_orientation(orientation: str, where: str) -> str:
    if orientation not in ORIENTATIONS:
        raise OptionError(f"{where}: orientation must be 'direct' or 'inverse', got {orientation!r}")
    return orientation


def as_points(x, where: str) -> np.ndarray:
    """Evaluation points as a float64 array (any shape); NaN is rejected, +-inf is allowed."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: x must be real numbers, got {type(x).__name__}") from None
    if np.isnan(arr).any():
        raise OptionError(f"{where}: x contains NaN")
    return arr
