"""One ESD → one row of named per-layer metrics.

Column names follow WeightWatcher 0.7.7 where they mean the same thing (Martin & Mahoney, JMLR 2021; Martin, Peng &
Mahoney, Nat. Commun. 2021).  With λ_i the eigenvalues (squared singular values, no rescaling) and α the fitted tail
exponent:

=====================  ========================================================================================
column                 definition
=====================  ========================================================================================
N, M, Q, gamma         larger / smaller matrix dimension, Q = N/M ≥ 1, γ = M/N ≤ 1
num_evals              number of eigenvalues in the ESD (B·M for B pooled matrices)
rank_loss              eigenvalues ≤ zero_tol = λ_max·N·eps(dtype) (numerically zero; excluded from fits)
dtype                  floating-point type the ESD was computed in
esd_method             "exact", or "top-k block Krylov" when only the k largest eigenvalues were computed
                       (``spectrum="approx"``): then rank_loss, entropy, log_alpha_norm and the MP/HTMP columns,
                       which need the whole ESD, are NaN; log_norm and stable_rank use the exact trace ‖W‖_F²
lambda_max             λ_max (the squared spectral norm)
log_norm               log10 Σ λ_i = log10 ‖W‖_F²
log_spectral_norm      log10 λ_max
stable_rank            Σ λ_i / λ_max
entropy                matrix entropy −Σ p_i ln p_i / ln(rank), p_i = λ_i / Σ λ_j over non-zero λ (nan if rank ≤ 1)
alpha                  power-law exponent of the ESD tail (Clauset-Shalizi-Newman; :mod:`hmu_diag.fits.powerlaw`)
xmin, xmax, D, sigma   tail start, tail end, KS distance, standard error (α−1)/√n_tail
p_value                CSN bootstrap goodness-of-fit p of the power law (``n_boot`` replicates; nan when n_boot = 0)
num_pl_spikes          n_tail, the number of eigenvalues in the fitted tail
alpha_weighted         α · log10 λ_max
log_alpha_norm         log10 Σ λ_i^α
warning                "under-trained" (α > 6), "over-trained" (α < 2), "" otherwise; "" when the fit failed
fit_status             "ok" or "failed: <reason>"
=====================  ========================================================================================

With ``htmp=True`` the HTMP and Marchenko-Pastur columns of :func:`hmu_diag.htmp_metrics.htmp_metrics` are added.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .fits.powerlaw import fit_power_law_many

if TYPE_CHECKING:
    from .spectra.weights import Spectrum

COLUMN_ORDER = ["N", "M", "Q", "gamma", "num_evals", "rank_loss", "dtype", "esd_method", "lambda_max", "alpha", "D",
                "sigma", "xmin", "xmax", "num_pl_spikes", "p_value", "num_fingers", "fit_status", "warning",
                "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank", "entropy"]
"""The order of the metric columns in every table (HTMP columns follow, in ``hmu_diag.htmp_metrics.COLUMNS`` order)."""

UNDER_TRAINED_ALPHA = 6.0
OVER_TRAINED_ALPHA = 2.0


def norm_metrics(evals: np.ndarray, trace: float | None = None) -> dict[str, float]:
    """Scale metrics of an ESD (all eigenvalues, zeros included): log_norm, log_spectral_norm, stable_rank, entropy.

    ``trace``: Σ λ_i when ``evals`` is only the top of the ESD; then the entropy (which needs every λ) is NaN."""
    positive = evals[evals > 0]
    total = float(positive.sum()) if trace is None else float(trace)
    lam_max = float(evals[-1]) if evals.size else math.nan
    if total <= 0 or not math.isfinite(total):
        return {"lambda_max": lam_max, "log_norm": math.nan, "log_spectral_norm": math.nan,
                "stable_rank": math.nan, "entropy": math.nan}
    p = positive / total
    rank = positive.size
    entropy = float(-(p * np.log(p)).sum() / math.log(rank)) if rank > 1 and trace is None else math.nan
    return {"lambda_max": lam_max, "log_norm": math.log10(total), "log_spectral_norm": math.log10(lam_max),
            "stable_rank": total / lam_max, "entropy": entropy}


def alpha_metrics(alpha: float, evals: np.ndarray, lambda_max: float) -> dict[str, float]:
    """Metrics that combine α with scale: alpha_weighted = α·log10 λ_max, log_alpha_norm = log10 Σ λ_i^α."""
    positive = evals[evals > 0]
    if not math.isfinite(alpha) or positive.size == 0:
        return {"alpha_weighted": math.nan, "log_alpha_norm": math.nan}
    top = positive.max()  # Σ λ^α = λ_max^α Σ (λ/λ_max)^α: no overflow for large α or λ
    return {"alpha_weighted": alpha * math.log10(lambda_max),
            "log_alpha_norm": alpha * math.log10(top) + math.log10(float(np.sum((positive / top) ** alpha)))}


def training_warning(alpha: float) -> str:
    """WeightWatcher's label from α alone: > 6 under-trained, < 2 over-trained (never for a failed fit)."""
    if not math.isfinite(alpha):
        return ""
    if alpha > UNDER_TRAINED_ALPHA:
        return "under-trained"
    if alpha < OVER_TRAINED_ALPHA:
        return "over-trained"
    return ""


def esd_row(evals: np.ndarray, *, N: int, M: int, zero_tol: float = 0.0, dtype: str = "float64",
            n_matrices: int = 1, xmax: float | None = None, fix_fingers: str | None = None, n_boot: int = 0,
            htmp: bool = True, htmp_orientation: str = "auto", seed: int = 0, esd_method: str = "exact",
            trace: float | None = None) -> dict[str, Any]:
    """Every per-layer metric of one ESD, as a flat dict (one table row): :func:`esd_rows` of one spectrum.

    Used alike for weight, Jacobian and Hessian spectra.  ``evals`` are all eigenvalues (any order); those ≤ ``zero_tol``
    count as rank loss and are excluded from the power-law and HTMP fits.  ``N ≥ M`` are the matrix dimensions that
    define γ = M/N for the MP/HTMP fits; ``n_matrices`` is the number of matrices pooled into ``evals``.
    A partial ESD (``esd_method`` other than "exact": ``evals`` are the largest n_matrices·M eigenvalues only, whose
    sum is ``trace``) gets the tail and norm columns; those that need the whole ESD are NaN (module docstring).
    """
    from .spectra.weights import Spectrum
    spectrum = Spectrum(np.asarray(evals, dtype=np.float64), N=int(N), M=int(M), n_matrices=int(n_matrices),
                        dtype=dtype, zero_tol=zero_tol, method=esd_method,
                        trace=math.nan if trace is None else float(trace))
    return esd_rows([spectrum], xmax=xmax, fix_fingers=fix_fingers, n_boot=n_boot, htmp=htmp,
                    htmp_orientation=htmp_orientation, seed=seed)[0]


def esd_rows(spectra: Sequence[Spectrum], *, xmax: float | None = None, fix_fingers: str | None = None,
             n_boot: int = 0, htmp: bool = True, htmp_orientation: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    """The rows of many ESDs (:class:`hmu_diag.spectra.weights.Spectrum`), one flat dict each (see :func:`esd_row`).

    The power-law fits of all spectra run as one batch (:func:`hmu_diag.fits.powerlaw.fit_power_law_many`), and so
    do the MP/HTMP columns of all exact spectra (:func:`hmu_diag.htmp_metrics.htmp_metrics_many`): a batch costs
    little more than one layer.  Each row is the same whatever else is in the batch.  ``htmp_orientation`` ("auto",
    "direct", "inverse") is passed to :func:`hmu_diag.fits.htmp.fit`; ``n_boot`` and ``seed`` to
    :func:`hmu_diag.fit_power_law` (bootstrap ``p_value``; 0: NaN).
    """
    from .htmp_metrics import htmp_metrics_many, lower_tail_input
    evals_sorted = [np.sort(np.asarray(spectrum.evals, dtype=np.float64)) for spectrum in spectra]
    fit_inputs = [evals[evals > spectrum.zero_tol] for evals, spectrum in zip(evals_sorted, spectra)]
    exact = [i for i, s in enumerate(spectra) if s.method == "exact"] if htmp else []
    # the lower-tail fits of the HTMP columns take the same options when xmax and fix_fingers are off: one batch
    lower_inputs = [lower_tail_input(fit_inputs[i]) for i in exact] if xmax is None and fix_fingers is None else []
    fitted = fit_power_law_many(fit_inputs + [x for x in lower_inputs if x is not None], xmax=xmax,
                                fix_fingers=fix_fingers, n_boot=n_boot, seed=seed)
    fits, fitted_lower = fitted[:len(fit_inputs)], iter(fitted[len(fit_inputs):])
    lower_fits = [None if x is None else next(fitted_lower) for x in lower_inputs] if lower_inputs else None
    rows, alphas = [], []
    for spectrum, evals, fit_input, fit in zip(spectra, evals_sorted, fit_inputs, fits):
        partial = spectrum.method != "exact"
        N, M = spectrum.N, spectrum.M
        row: dict[str, Any] = {"N": int(N), "M": int(M), "Q": N / M, "gamma": M / N,
                               "num_evals": int(spectrum.n_matrices * M) if partial else int(evals.size),
                               "rank_loss": math.nan if partial else int(evals.size - fit_input.size),
                               "dtype": spectrum.dtype, "esd_method": spectrum.method}
        row.update(norm_metrics(evals, spectrum.trace if partial else None))
        row.update({"alpha": fit.alpha, "xmin": fit.xmin, "xmax": fit.xmax, "D": fit.D, "sigma": fit.sigma,
                    "p_value": fit.p_value, "num_pl_spikes": fit.n_tail, "num_fingers": fit.num_fingers,
                    "fit_status": fit.status})
        row.update(alpha_metrics(fit.alpha, fit_input, row["lambda_max"]))
        if partial:
            row["log_alpha_norm"] = math.nan
        row["warning"] = training_warning(fit.alpha)
        if htmp and partial:
            row["htmp_status"] = (f"skipped: partial ESD ({spectrum.method}); MP/HTMP fits need every "
                                  "eigenvalue")
        rows.append(row)
        alphas.append(fit.alpha)
    if exact:
        columns = htmp_metrics_many([fit_inputs[i] for i in exact], [spectra[i].M / spectra[i].N for i in exact],
                                    alphas=[alphas[i] for i in exact],
                                    rank_losses=[rows[i]["rank_loss"] for i in exact],
                                    n_matrices=[spectra[i].n_matrices for i in exact], orientation=htmp_orientation,
                                    seed=seed, n_boot=n_boot, lower_fits=lower_fits)
        for i, extra in zip(exact, columns):
            rows[i].update(extra)
    return rows
