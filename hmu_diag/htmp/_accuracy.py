"""Accuracy modes of the HTMP evaluators: "exact" (the default, the public API) and "fit" (inside fits).

Exact: CDF and density to ~1e-10 whatever it costs (ODE at rtol 1e-12, mpmath start values, generous mpmath limits).

Fit (:func:`fit_mode`, entered by :func:`hmu_diag.fits.htmp.fit`): the law only feeds KS distances (reported to three
digits), binned log-likelihoods and spike thresholds, so an absolute CDF error up to ``FIT_CDF_ATOL`` is immaterial
and buys speed where the exact evaluation is slow:

* F and 1 - F come from tabulated quantiles (:mod:`hmu_diag.htmp._quantile_table`: gamma in [0.02, 0.95] and
  gamma = 1, kappa in [0.01, 199.5]; ~0.1 ms instead of 0.5-15 ms);
* outside the table, delta within ``INT_GAP`` of a positive integer (the connection formula does not apply; the exact
  path integrates the ODE from mpmath start values, 10-30 ms): F and 1 - F are interpolated in delta at fixed gamma
  (cubic Lagrange through delta = n -+ 0.1, n -+ 0.2, where the fast path applies; tested against the exact CDF);
* the ODE (square layers, other fast-path failures) integrates at rtol ``FIT_RTOL`` instead of 1e-12 (CDF error
  < 1e-8, measured);
* mpmath runs under ``FIT_MPMATH_LIMITS`` (gives up within ~20 ms where the series would need minutes).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from hmu_diag.htmp._kummer import FIT_MPMATH_LIMITS, mpmath_limits

#: largest absolute CDF error accepted in fit mode (measured: table < 1e-4, interpolation across integer delta < 5e-5)
FIT_CDF_ATOL = 1e-4
#: ODE tolerances (relative, absolute) in fit mode
FIT_RTOL, FIT_ATOL = 1e-10, 1e-11

_FIT_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("htmp_fit_mode", default=False)


@contextlib.contextmanager
def fit_mode() -> Iterator[None]:
    """Within the block the HTMP evaluators trade exactness (~1e-10) for speed (module docstring)."""
    token = _FIT_MODE.set(True)
    try:
        with mpmath_limits(*FIT_MPMATH_LIMITS):
            yield
    finally:
        _FIT_MODE.reset(token)


def in_fit_mode() -> bool:
    """Whether the caller runs inside :func:`fit_mode`."""
    return _FIT_MODE.get()
