"""hmu-diag: audit trained neural networks from the spectra of their matrices.

Public API (plain functions returning DataFrames or frozen dataclasses):

- :func:`analyze` — one row of spectral metrics per weight matrix; :func:`summarize` — one row per model;
  :func:`compute_spectra` — the eigenvalues themselves.
- :func:`fit_power_law` — Clauset-Shalizi-Newman power-law fit (parity with ``powerlaw`` 2.0.0), :func:`fit_mp`.
- :mod:`hmu_diag.htmp` — the high-temperature Marchenko-Pastur family (pdf, cdf, sample, fit).
- :func:`rank`, :func:`compare`, :func:`write_report` — rank models, compare layers, write HTML reports.
- :func:`jacobian_spectrum`, :func:`layer_jacobian_spectra`, :func:`hessian_spectrum` — spectra from model + data.
"""
__version__ = "0.1.0"  # before the imports: hmu_diag.cache keys results by it

from . import htmp  # noqa: E402
from .compare import compare  # noqa: E402
from .fits.mp import fit_mp  # noqa: E402
from .fits.powerlaw import PowerLawFit, fit_power_law  # noqa: E402
from .pipeline import analyze, compute_spectra  # noqa: E402
from .rank import rank  # noqa: E402
from .report import write_report  # noqa: E402
from .spectra.hessian import hessian_spectrum  # noqa: E402
from .spectra.jacobian import jacobian_spectrum, layer_jacobian_spectra  # noqa: E402
from .summary import summarize  # noqa: E402

__all__ = ["analyze", "summarize", "compute_spectra", "fit_power_law", "PowerLawFit", "fit_mp", "htmp", "rank",
           "compare", "write_report", "jacobian_spectrum", "layer_jacobian_spectra", "hessian_spectrum"]
