"""Shape-matched random baseline of α (hmu_diag.baseline).

References: dense eigenvalues of W^T W for W = randn(N, M) (numpy LAPACK), exact Wishart moments
(E tr = NM, Var tr = 2NM, E tr² = NM(N+M+1)), and the power-law fit of dense Gaussian matrices.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hmu_diag.baseline import BASELINE_COLUMNS, _random_alphas, add_random_baseline, random_alpha, wishart_eigenvalues
from hmu_diag.errors import OptionError
from hmu_diag.fits.powerlaw import fit_power_law


def dense_eigs(N: int, M: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal((N, M))
    return np.linalg.eigvalsh(w.T @ w)


@pytest.mark.parametrize("N,M", [(40, 40), (120, 30), (30, 75)])
def test_bidiagonal_model_matches_dense_wishart_in_distribution(N, M):
    rng = np.random.default_rng(1)
    reps = 300
    fast = np.stack([wishart_eigenvalues(N, M, rng=rng) for _ in range(reps)])
    dense = np.stack([dense_eigs(max(N, M), min(N, M), rng) for _ in range(reps)])
    assert fast.shape == dense.shape == (reps, min(N, M))
    assert np.all(np.diff(fast, axis=1) >= 0)
    # the pooled ESD, the largest and the smallest eigenvalue all have the same law (two-sample KS)
    for a, b in [(fast.ravel(), dense.ravel()), (fast[:, -1], dense[:, -1]), (fast[:, 0], dense[:, 0])]:
        assert stats.ks_2samp(a, b).pvalue > 1e-3
    # exact Wishart moments: tr ~ chi2(NM); E tr^2(W^T W) = NM(N+M+1)
    tr = fast.sum(axis=1)
    nm = N * M
    assert abs(tr.mean() - nm) < 4 * np.sqrt(2 * nm / reps)
    assert abs(tr.var() / (2 * nm) - 1) < 0.3
    tr2 = (fast ** 2).sum(axis=1).mean()
    assert tr2 == pytest.approx(nm * (N + M + 1), rel=0.03)


def test_wishart_pooling_and_determinism():
    a = wishart_eigenvalues(50, 20, n_matrices=3, rng=7)
    b = wishart_eigenvalues(50, 20, n_matrices=3, rng=7)
    assert a.shape == (60,) and np.array_equal(a, b) and np.all(np.diff(a) >= 0)
    assert not np.array_equal(a, wishart_eigenvalues(50, 20, n_matrices=3, rng=8))


def test_random_alpha_matches_fits_of_dense_gaussian_matrices():
    """The null α distribution equals that of fit_power_law on dense randn(N, M) spectra."""
    N, M, draws = 160, 80, 60
    med, lo, hi = random_alpha(N, M, n_draws=draws, seed=3)
    rng = np.random.default_rng(11)
    dense = np.array([fit_power_law(dense_eigs(N, M, rng)).alpha for _ in range(draws)])
    assert lo <= np.median(dense) <= hi
    fast = _random_alphas(N, M, 1, 3, draws, ())
    assert stats.ks_2samp(fast, dense).pvalue > 1e-3
    assert lo <= med <= hi
    assert (med, lo, hi) == pytest.approx(tuple(np.quantile(fast, [0.05, 0.5, 0.95])[[1, 0, 2]]))


def test_random_alpha_is_cached_and_option_keyed():
    _random_alphas.cache_clear()
    first = random_alpha(90, 30, n_draws=5)
    assert random_alpha(30, 90, n_draws=5) == first          # orientation does not matter
    assert _random_alphas.cache_info().hits == 1
    other = random_alpha(90, 30, n_draws=5, fix_fingers="clip_xmax")
    assert _random_alphas.cache_info().misses == 2
    assert np.isfinite(other).all()


@pytest.mark.parametrize("kwargs", [dict(N=10, M=1), dict(N=10, M=5, n_matrices=0), dict(N=10, M=5, n_draws=0),
                                    dict(N=10, M=5, level=1.0)])
def test_random_alpha_rejects_bad_options(kwargs):
    with pytest.raises(OptionError):
        random_alpha(**kwargs)


def _row(name: str, evals: np.ndarray, N: int, M: int, **extra) -> dict:
    fit = fit_power_law(evals)
    return {"model": "m", "layer": name, "kind": "linear", "source": "weights", "status": "ok", "N": N, "M": M,
            "num_evals": evals.size, "alpha": fit.alpha, **extra}


def test_add_random_baseline_separates_random_from_heavy_tailed_layers():
    rng = np.random.default_rng(5)
    N, M = 400, 200
    gaussian = dense_eigs(N, M, rng)
    pareto = rng.pareto(1.0, size=(N, M)) * rng.choice([-1.0, 1.0], size=(N, M))   # tail index mu = 1: alpha ~ 1.5
    heavy = np.linalg.eigvalsh(pareto.T @ pareto)
    rows = [_row("random", gaussian, N, M), _row("heavy", heavy, N, M),
            {"model": "m", "layer": "bias", "kind": "other", "source": "weights", "status": "skipped: 1-D tensor",
             "N": np.nan, "M": np.nan, "num_evals": np.nan, "alpha": np.nan},
            _row("hessian", gaussian, N, M, source="hessian")]
    table = add_random_baseline(pd.DataFrame(rows), n_draws=12)
    assert list(table.columns[-5:]) == BASELINE_COLUMNS
    random_row, heavy_row, skipped, hessian = (table.iloc[i] for i in range(4))
    assert random_row["alpha_random"] == heavy_row["alpha_random"]          # same shape, same null
    assert random_row["alpha_random_lo"] <= random_row["alpha_random"] <= random_row["alpha_random_hi"]
    assert bool(random_row["random_like"]) is True
    assert bool(heavy_row["random_like"]) is False and heavy_row["alpha_excess"] < -1
    assert heavy_row["alpha_excess"] == pytest.approx(heavy_row["alpha"] - heavy_row["alpha_random"])
    assert np.isnan(skipped["alpha_random"]) and pd.isna(skipped["random_like"])
    assert np.isnan(hessian["alpha_random"])


def test_add_random_baseline_pools_conv_slices():
    """num_evals / M pooled matrices: the null pools as many draws (a different null than one matrix)."""
    table = pd.DataFrame([{"model": "m", "layer": "c", "kind": "conv2d", "status": "ok", "N": 64, "M": 32,
                           "num_evals": 9 * 32, "alpha": 3.0}])
    out = add_random_baseline(table, n_draws=4)
    assert out["alpha_random"].iloc[0] == random_alpha(64, 32, n_matrices=9, n_draws=4)[0]


def test_add_random_baseline_needs_the_shape_columns():
    with pytest.raises(OptionError, match="num_evals"):
        add_random_baseline(pd.DataFrame({"alpha": [2.0], "N": [10], "M": [5]}))
