"""hmu-diag: audit trained neural networks from the spectra of their matrices.

Public API (plain functions returning DataFrames or frozen dataclasses):

- :func:`analyze` — one row of spectral metrics per weight matrix; :func:`summarize` — one row per model;
  :func:`compute_spectra` — the eigenvalues themselves.
- :func:`fit_power_law` — Clauset-Shalizi-Newman power-law fit (parity with ``powerlaw`` 2.0.0);
  :func:`fit_power_law_many` — the same fit of many spectra in one batch; :func:`fit_mp`.
- :mod:`hmu_diag.htmp` — the high-temperature Marchenko-Pastur family (pdf, cdf, sample, fit).
- :func:`rank`, :func:`compare`, :func:`write_report` — rank models, compare layers, write HTML reports.
- :func:`jacobian_spectrum`, :func:`layer_jacobian_spectra`, :func:`hessian_spectrum` — spectra from model + data.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"  # hmu_diag.cache keys results by it

#: public name -> module that defines it; imported on first use (PEP 562), so ``import hmu_diag`` and process-pool
#: workers (which need only the pipeline) do not pay for matplotlib, the report and rank modules up front
_EXPORTS = {
    "analyze": "pipeline", "compute_spectra": "pipeline", "summarize": "summary",
    "fit_power_law": "fits.powerlaw", "fit_power_law_many": "fits.powerlaw", "PowerLawFit": "fits.powerlaw",
    "fit_mp": "fits.mp",
    "rank": "rank", "compare": "compare", "write_report": "report",
    "jacobian_spectrum": "spectra.jacobian", "layer_jacobian_spectra": "spectra.jacobian",
    "hessian_spectrum": "spectra.hessian",
}

__all__ = ["analyze", "summarize", "compute_spectra", "fit_power_law", "fit_power_law_many", "PowerLawFit", "fit_mp",
           "htmp", "rank", "compare", "write_report", "jacobian_spectrum", "layer_jacobian_spectra", "hessian_spectrum"]


def __getattr__(name: str) -> Any:
    if name == "htmp":
        return importlib.import_module(".htmp", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hmu_diag' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
