"""Per-layer HTMP / Marchenko-Pastur / phase columns of the metrics table (one dict per eigenvalue spectrum).

Columns (units: those of the eigenvalues; exponents are dimensionless):

=====================  ===================================================================================
htmp_kappa             HTMP eigenvalue repulsion (:func:`hmu_diag.fits.htmp.fit`); inf = indistinguishable from MP
htmp_kappa_lo, _hi     its 95% confidence interval
htmp_scale             sigma^2, mean of the HTMP variable (lambda, or 1/lambda when the orientation is inverse)
htmp_orientation       "direct" (lambda ~ HTMP) or "inverse" (1/lambda ~ HTMP), whichever has the smaller KS D
htmp_delta             delta = kappa (1 - gamma) / (2 gamma)
htmp_D, mp_D           KS distances of the HTMP and MP fits (each on its own bulk, spikes excluded)
mp_scale, mp_bulk_max  MP scale (mean of the bulk law) and upper edge scale (1 + sqrt(gamma))^2
mp_num_spikes          eigenvalues above the Tracy-Widom edge of the MP fit (:func:`hmu_diag.fits.mp.fit_mp`)
htmp_pred_alpha        1 + delta: predicted power-law exponent of the upper tail of the inverse of the HTMP variable
                       (of 1/lambda for a direct fit, of lambda for an inverse fit)
htmp_pred_lower_exp    delta - 1: predicted density exponent of the HTMP variable near 0 (rho ~ x^(delta-1))
lower_alpha            measured: power-law exponent of the upper tail of 1/lambda (CSN fit,
                       :func:`hmu_diag.fits.powerlaw.fit_power_law`, x_min within the smaller half of the eigenvalues:
                       :func:`lower_tail_input`), i.e. rho(lambda) ~ lambda^(lower_alpha - 2) near 0; compare with
                       htmp_pred_alpha (direct fits) or htmp_pred_lower_exp + 2
lower_D                KS distance of that power-law fit
lower_p_value          its CSN bootstrap goodness-of-fit p (``n_boot`` replicates; NaN when n_boot = 0)
alpha_minus_pred       alpha (the caller's HTSR exponent of lambda's upper tail) - htmp_pred_alpha; meaningful for
                       inverse fits, where HTMP predicts that tail
phase                  5+1 phase (:func:`hmu_diag.fits.phase.classify_phase`) or "undetermined"
htmp_status            "ok"; "ok: no D (...)" when kappa and its CI stand but the law could not be evaluated within
                       the fit's limits (htmp_D NaN); "failed: <reason>" when no HTMP fit exists (the HTMP numbers
                       are NaN); "skipped: <reason>" (set by :func:`hmu_diag.metrics.esd_row` for partial spectra)
=====================  ===================================================================================

:func:`htmp_metrics` never raises on degenerate data or shapes (too few eigenvalues, all equal, NaN, gamma outside
(0, 1]): the numbers are NaN, htmp_orientation is "", phase is "undetermined" and htmp_status says why.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hmu_diag.errors import HmuDiagError, failed_status
from hmu_diag.fits._values import positive_sorted
from hmu_diag.fits.htmp import fit_many as htmp_fit_many
from hmu_diag.fits.mp import fit_mp_many
from hmu_diag.fits.phase import UNDETERMINED, classify_phase
from hmu_diag.fits.powerlaw import PowerLawFit, fit_power_law_many

__all__ = ["COLUMNS", "htmp_metrics", "htmp_metrics_many", "lower_tail_input"]

COLUMNS = ("htmp_kappa", "htmp_kappa_lo", "htmp_kappa_hi", "htmp_scale", "htmp_orientation", "htmp_delta", "htmp_D",
           "mp_D", "mp_scale", "mp_bulk_max", "mp_num_spikes", "htmp_pred_alpha", "htmp_pred_lower_exp",
           "lower_alpha", "lower_D", "lower_p_value", "alpha_minus_pred", "phase", "htmp_status")


def _empty(status: str) -> dict:
    row = {c: math.nan for c in COLUMNS}
    row.update(htmp_orientation="", mp_num_spikes=0, phase=UNDETERMINED, htmp_status=status)
    return row


def _fit_status(ht) -> str:
    """The htmp_status of a fit: its own status, qualified when D could not be evaluated."""
    if ht.ok and not math.isfinite(ht.D):
        return "ok: no D (the HTMP law is not evaluable within the fit's limits)"
    return ht.status


def htmp_metrics(evals, gamma: float, *, alpha: float = math.nan, seed: int = 0, rank_loss: int = 0,
                 n_matrices: int = 1, orientation: str = "auto", ci: str = "asymptotic", spikes: bool = True,
                 lower_tail: bool = True, n_boot: int = 0) -> dict:
    """The per-layer HTMP/MP/phase columns (module docstring) for one spectrum.

    ``evals``: eigenvalues of the smaller Gram (``rank_loss`` zero eigenvalues may have been removed before);
    ``gamma``: M/N in (0, 1]; ``alpha``: the layer's HTSR power-law exponent (for ``alpha_minus_pred``);
    ``n_matrices``: matrices pooled into ``evals``; ``orientation``, ``ci``, ``spikes``, ``seed``: passed to
    :func:`hmu_diag.fits.htmp.fit`; ``lower_tail=False`` skips the power-law fit of 1/lambda (its columns NaN);
    ``n_boot`` bootstrap replicates give that fit's ``lower_p_value`` (0: NaN; seeded by ``seed``).
    """
    return htmp_metrics_many([evals], [gamma], alphas=[alpha], rank_losses=[rank_loss], n_matrices=[n_matrices],
                             seed=seed, orientation=orientation, ci=ci, spikes=spikes, lower_tail=lower_tail,
                             n_boot=n_boot)[0]


_DATA_ERRORS = (HmuDiagError, ValueError, TypeError, ArithmeticError)
#: the fewest eigenvalues a lower-tail fit is fitted to (:func:`lower_tail_input`)
LOWER_TAIL_MIN = 10


def htmp_metrics_many(evals_list: Sequence, gammas: Sequence[float], *, alphas: Sequence[float] | None = None,
                      rank_losses: Sequence[int] | None = None, n_matrices: Sequence[int] | None = None,
                      seed: int = 0, orientation: str = "auto", ci: str = "asymptotic", spikes: bool = True,
                      lower_tail: bool = True, n_boot: int = 0,
                      lower_fits: Sequence[PowerLawFit | None] | None = None) -> list[dict]:
    """:func:`htmp_metrics` of many spectra (per-spectrum ``alphas``, ``rank_losses``, ``n_matrices``; defaults NaN,
    0, 1): the HTMP fits of all of them run as one batch (:func:`hmu_diag.fits.htmp.fit_many`).  Each row equals the
    one :func:`htmp_metrics` gives alone: a spectrum that makes the batch raise is refitted on its own, so it gets
    its own failure row and the others are unaffected.  ``lower_fits``: the power-law fits of the spectra's
    :func:`lower_tail_input` (None where that is None) when the caller has fitted them already, e.g. in one batch
    with other power-law fits; fitted here otherwise (when ``lower_tail``).
    """
    count = len(evals_list)
    alphas = [math.nan] * count if alphas is None else list(alphas)
    rank_losses = [0] * count if rank_losses is None else list(rank_losses)
    n_matrices = [1] * count if n_matrices is None else list(n_matrices)
    rows: list[dict | None] = [None] * count
    xs = {}
    for i, evals in enumerate(evals_list):
        try:
            xs[i] = np.asarray(evals, dtype=np.float64).ravel()
        except _DATA_ERRORS as exc:
            rows[i] = _empty(failed_status(type(exc).__name__, str(exc)))

    def fit_laws(batch: list[int]) -> list[tuple]:
        """(MP fit, HTMP fit) of each spectrum of the batch, both fitted as batches."""
        with np.errstate(all="ignore"):
            mps = fit_mp_many([xs[i] for i in batch], [gammas[i] for i in batch], spikes=spikes,
                              n_matrices=[n_matrices[i] for i in batch])
            hts = htmp_fit_many([xs[i] for i in batch], [gammas[i] for i in batch], orientation, spikes=spikes,
                                ci=ci, seed=seed, n_matrices=[n_matrices[i] for i in batch], mps=mps)
        return list(zip(mps, hts))

    ok = list(xs)
    try:
        fits = fit_laws(ok)
    except _DATA_ERRORS:                  # one spectrum the batch cannot take: fit each alone, only it fails
        fits = []
        for i in ok:
            try:
                fits.extend(fit_laws([i]))
            except _DATA_ERRORS as exc:
                fits.append(exc)
    if not lower_tail:
        lower = {}
    elif lower_fits is not None:
        lower = dict(enumerate(lower_fits))
    else:
        inputs = {i: lower_tail_input(x) for i, x in xs.items()}
        inputs = {i: x for i, x in inputs.items() if x is not None}
        lower = dict(zip(inputs, fit_power_law_many(list(inputs.values()), n_boot=n_boot, seed=seed)))
    for i, fitted in zip(ok, fits):
        if isinstance(fitted, Exception):
            rows[i] = _empty(failed_status(type(fitted).__name__, str(fitted)))
        else:
            rows[i] = _columns(xs[i], *fitted, lower.get(i), alpha=alphas[i], rank_loss=rank_losses[i])
    return rows


def lower_tail_input(evals: np.ndarray) -> np.ndarray | None:
    """What the lower-tail power-law fit is fitted to: 1/lambda of the smaller half of the positive finite eigenvalues
    (the ceil(n/2) smallest, at least ``LOWER_TAIL_MIN`` of them), ascending, in any order of ``evals``; None when
    there are fewer than ``LOWER_TAIL_MIN`` positive eigenvalues.

    A CSN fit uses only the values at or above its x_min, so this is the fit of all of 1/lambda with x_min restricted
    to the smaller half: the measured lower tail is a tail, the regime where HTMP's lambda^(delta-1) holds, not the
    whole spectrum (unrestricted, the fit takes over 90% of the eigenvalues in a quarter of the zoo's layers).  On
    HTMP samples (n = 1000, 8 seeds each, gamma 0.25/0.5/0.8, kappa 0.5-4) it agrees with the predicted 1 + delta as
    well as or better than the unrestricted fit (e.g. gamma 0.8, kappa 1: 1.16 vs 1.17 for 1.12), and it scans half
    the x_min candidates over tails at most half as long.
    """
    pos, _ = positive_sorted(evals)
    if pos.size < LOWER_TAIL_MIN:
        return None
    return 1.0 / pos[max((pos.size + 1) // 2, LOWER_TAIL_MIN) - 1::-1]


def _columns(x: np.ndarray, mp, ht, pl: PowerLawFit | None, *, alpha: float, rank_loss: int) -> dict:
    """One spectrum's row from its MP and HTMP fits, the power-law fit of its lower tail (None: not fitted), and the
    phase."""
    row = _empty(_fit_status(ht))
    if mp.ok:
        row.update(mp_D=mp.D, mp_scale=mp.scale, mp_bulk_max=mp.bulk_max, mp_num_spikes=mp.num_spikes)
    if ht.ok:
        row.update(htmp_kappa=ht.kappa, htmp_kappa_lo=ht.kappa_lo, htmp_kappa_hi=ht.kappa_hi, htmp_scale=ht.scale,
                   htmp_orientation=ht.orientation, htmp_delta=ht.delta, htmp_D=ht.D, htmp_pred_alpha=ht.pred_alpha,
                   htmp_pred_lower_exp=ht.pred_lower_exp,
                   alpha_minus_pred=float(alpha) - ht.pred_alpha if math.isfinite(ht.pred_alpha) else math.nan)
    if pl is not None and pl.ok:
        row.update(lower_alpha=pl.alpha, lower_D=pl.D, lower_p_value=pl.p_value)
    row["phase"] = classify_phase(x, mp, ht, rank_loss=rank_loss)
    return row
