"""Approximate top eigenvalues (randomized block Krylov) against exact dense eigendecompositions (numpy eigvalsh of the
Gram matrix), and the partial-spectrum power-law fit against powerlaw.Fit (powerlaw 2.0.0) on the full spectrum."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from hmu_diag import analyze
from hmu_diag.errors import OptionError
from hmu_diag.spectra.approx import approx_top_eigenvalues, krylov_is_cheaper


def exact_top(w: np.ndarray, k: int) -> np.ndarray:
    """Reference: the k largest eigenvalues of the smaller Gram matrix by LAPACK syevd in float64."""
    w = w if w.shape[0] >= w.shape[1] else w.T
    return np.linalg.eigvalsh(w.T @ w)[-k:]


@pytest.fixture(scope="module")
def heavy() -> np.ndarray:
    """Student-t(3) entries: a heavy-tailed ESD (a few large spikes above an MP-like bulk)."""
    return np.random.default_rng(1).standard_t(3, size=(2000, 600))


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """Gaussian entries: a flat Marchenko-Pastur bulk, the slowest case for Krylov methods."""
    return np.random.default_rng(2).standard_normal((2000, 600))


def relative_errors(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(approx - exact) / exact


def test_heavy_tailed_top_is_accurate_and_never_above_the_exact_values(heavy):
    k = 60
    exact = exact_top(heavy, k)
    approx = approx_top_eigenvalues(heavy, k, dtype="float64", method="krylov")
    assert approx.shape == (k,) and approx.dtype == np.float64 and np.all(np.diff(approx) >= 0)
    err = relative_errors(approx, exact)
    assert err.max() < 1e-3  # measured 5e-5, at the k-th value
    assert err[-10:].max() < 1e-5 and err[-1] < 1e-12  # the separated top converges fastest (measured 1e-7, 8e-15)
    assert np.all(approx <= exact * (1 + 1e-12))  # Ritz values are lower bounds (interlacing)


def test_flat_bulk_error_shrinks_with_iterations(noise):
    k = 40
    exact = exact_top(noise, k)
    errors = [relative_errors(approx_top_eigenvalues(noise, k, n_iter=q, dtype="float64", method="krylov"),
                              exact).max() for q in (1, 3, 6)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-2  # measured 5e-3: the hardest case (no spectral gap)


def test_float32_matches_float64(heavy):
    a32 = approx_top_eigenvalues(heavy, 30, dtype="float32", method="krylov")
    a64 = approx_top_eigenvalues(heavy, 30, dtype="float64", method="krylov")
    assert relative_errors(a32, a64).max() < 1e-4


def test_orientation_numpy_torch_and_seed(heavy):
    def top20(w, seed=3):
        return approx_top_eigenvalues(w, 20, dtype="float64", seed=seed, method="krylov")

    a = top20(heavy)
    # the transposed matrix (another memory layout, so other BLAS rounding) has the same spectrum
    assert np.allclose(a, top20(heavy.T.copy()), rtol=1e-12, atol=0)
    assert np.array_equal(a, top20(torch.from_numpy(heavy)))
    assert np.array_equal(a, top20(heavy))  # deterministic
    b = top20(heavy, seed=4)
    assert not np.array_equal(a, b) and relative_errors(a, b).max() < 1e-2  # measured 2e-3 (at the k-th value)


def test_half_precision_input(heavy):
    w = torch.from_numpy(heavy[:, :200]).to(torch.bfloat16)
    exact = exact_top(w.double().numpy(), 10)  # the matrix actually stored, in float64
    approx = approx_top_eigenvalues(w, 10, dtype="float64", method="krylov")
    assert relative_errors(approx, exact).max() < 1e-4  # measured 1e-5


def test_auto_uses_the_exact_spectrum_when_krylov_costs_more():
    w = np.random.default_rng(5).standard_normal((300, 100))
    # (k + oversample)(3 n_iter + 2) >= M: Krylov would need more flops than W^T W + syevd
    assert not krylov_is_cheaper(300, 100, 30, 6)
    assert np.allclose(approx_top_eigenvalues(w, 20, dtype="float64"), exact_top(w, 20), rtol=1e-12)
    assert np.allclose(approx_top_eigenvalues(w, 100, dtype="float64", method="krylov"), exact_top(w, 100), rtol=1e-10)
    assert np.allclose(approx_top_eigenvalues(w, 5, dtype="float64", method="exact"), exact_top(w, 5), rtol=1e-12)


def test_cost_model_prefers_krylov_only_for_a_small_k():
    # flops: Krylov 2NMb(3q+2) + 2N(b(q+1))^2 against exact NM^2 (syrk) + 4M^3/3 (module docstring)
    assert krylov_is_cheaper(50_000, 4096, 64 + 10, 6)
    assert not krylov_is_cheaper(50_000, 4096, 128 + 10, 6)
    assert not krylov_is_cheaper(50_000, 4096, 600, 6)  # the Krylov space would exceed M


@pytest.mark.parametrize("k", [0, 601])
def test_k_out_of_range_is_an_option_error(heavy, k):
    with pytest.raises(OptionError, match=f"k={k}"):
        approx_top_eigenvalues(heavy, k)


def test_bad_shapes_and_dtypes_are_option_errors(heavy):
    with pytest.raises(OptionError, match="2-D"):
        approx_top_eigenvalues(np.zeros((2, 3, 4)), 1)
    with pytest.raises(OptionError, match="dtype"):
        approx_top_eigenvalues(heavy, 5, dtype="int8")
    with pytest.raises(OptionError, match="n_iter"):
        approx_top_eigenvalues(heavy, 5, n_iter=-1)
    with pytest.raises(OptionError, match="method='lanczos'"):
        approx_top_eigenvalues(heavy, 5, method="lanczos")


# ------------------------------------------------------------------ power-law fits on a partial spectrum

@pytest.fixture(scope="module")
def tailed() -> tuple[np.ndarray, np.ndarray]:
    """A 2500 x 800 Student-t(2.5) matrix and its exact ESD (800 eigenvalues, float64)."""
    w = np.random.default_rng(2).standard_t(2.5, size=(2500, 800))
    return w, np.linalg.eigvalsh(w.T @ w)


def powerlaw_fit(x: np.ndarray):
    """Reference: powerlaw 2.0.0 with the alpha range of hmu-diag's default (no cap at 3)."""
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, parameter_ranges={"alpha": [1.0, 50.0]}, verbose=False)


def test_top_k_fit_equals_full_fit_when_xmin_is_inside_the_top_k(tailed):
    w, evals = tailed
    k = 80
    full = powerlaw_fit(evals)
    n_tail = int(np.count_nonzero(evals >= full.xmin))
    assert n_tail <= k - 2  # precondition of the property: the exact x_min lies within the top k
    exact_top_k = powerlaw_fit(evals[-k:])
    assert exact_top_k.xmin == full.xmin
    assert exact_top_k.alpha == pytest.approx(full.alpha, rel=1e-12)
    assert exact_top_k.D == pytest.approx(full.D, rel=1e-12)
    # the same with the approximate top k: x_min is the same eigenvalue (to the approximation error), alpha close
    approx = powerlaw_fit(approx_top_eigenvalues(w, k, dtype="float32", method="krylov"))
    assert approx.xmin == pytest.approx(full.xmin, rel=1e-3)
    assert abs(approx.alpha - full.alpha) < 1e-3  # measured 4e-6


def test_hmu_fitter_on_the_top_k_matches_its_full_fit(tailed):
    from hmu_diag.fits.powerlaw import fit_power_law

    w, evals = tailed
    k = 80
    full = fit_power_law(evals)
    assert full.status == "ok" and full.n_tail <= k - 2
    top = fit_power_law(evals[-k:])
    assert (top.xmin, top.n_tail) == (full.xmin, full.n_tail)
    assert top.alpha == pytest.approx(full.alpha, rel=1e-12) and top.D == pytest.approx(full.D, rel=1e-12)
    assert top.n == k and full.n == evals.size  # n counts what was passed: report the full M separately
    approx = fit_power_law(approx_top_eigenvalues(w, k, method="krylov"))
    assert approx.n_tail == full.n_tail and abs(approx.alpha - full.alpha) < 1e-3


# ------------------------------------------------------------------ analyze(spectrum="approx") end to end

def _spiked_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A 6000 x 2000 layer with a prescribed ESD: 1988 eigenvalues uniform on [0.5, 1] (a bulk no power law fits)
    and a Pareto(1.5) tail of 20 from 3 up (a short tail, the case the approximate spectrum is for), W = U diag(√λ)
    Vᵀ with random orthonormal U, V; and a small 64 x 32 layer."""
    rng = np.random.default_rng(seed)
    n, m = 6000, 2000
    lam = np.concatenate([rng.uniform(0.5, 1.0, m - 20), 3.0 * (1 + rng.pareto(1.5, 20))])
    u, v = np.linalg.qr(rng.standard_normal((n, m)))[0], np.linalg.qr(rng.standard_normal((m, m)))[0]
    w = (u * np.sqrt(lam)) @ v.T
    return {"encoder.proj.weight": torch.from_numpy(w.astype(np.float32)),
            "encoder.small.weight": torch.from_numpy(rng.standard_normal((64, 32)).astype(np.float32))}


def test_analyze_approx_keeps_the_tail_metrics_of_the_exact_run():
    """A 6000 x 2000 spiked layer: the top-k Krylov run gives the exact run's tail and norms; the small layer,
    where Krylov would cost more than the exact ESD, is computed exactly and gets the same row."""
    sd = _spiked_state_dict(seed=0)
    exact = analyze(sd, htmp=True).set_index("layer")
    approx = analyze(sd, htmp=True, spectrum="approx", top_k=48).set_index("layer")
    big, small = "encoder.proj", "encoder.small"
    assert exact.loc[big, "esd_method"] == "exact"
    assert approx.loc[big, "esd_method"].endswith("block Krylov")
    k = int(approx.loc[big, "esd_method"].split()[0].removeprefix("top-"))
    assert k >= 48 and approx.loc[big, "num_pl_spikes"] <= k // 2          # x_min well inside the computed top
    assert approx.loc[big, "num_evals"] == exact.loc[big, "num_evals"] == 2000
    for col in ("alpha", "D", "xmin", "num_pl_spikes"):                        # x_min inside the top k: same fit
        assert approx.loc[big, col] == pytest.approx(exact.loc[big, col], rel=1e-6)
    assert approx.loc[big, "lambda_max"] == pytest.approx(exact.loc[big, "lambda_max"], rel=1e-9)
    for col in ("log_norm", "stable_rank"):                                   # exact trace ||W||_F^2
        assert approx.loc[big, col] == pytest.approx(exact.loc[big, col], rel=1e-9)
    for col in ("entropy", "rank_loss", "log_alpha_norm", "htmp_kappa", "mp_D"):   # need the whole ESD
        assert np.isnan(approx.loc[big, col]) and not np.isnan(exact.loc[big, col])
    assert approx.loc[big, "status"] == "ok" and exact.loc[big, "htmp_status"] == "ok"
    assert approx.loc[big, "htmp_status"].startswith("skipped: partial ESD")
    pd.testing.assert_series_equal(approx.loc[small], exact.loc[small])


def test_analyze_approx_doubles_k_until_the_tail_fits_inside():
    sd = {"fc.weight": _spiked_state_dict(seed=0)["encoder.proj.weight"]}
    row = analyze(sd, htmp=False, spectrum="approx", top_k=3).iloc[0]          # 3, 6, 12, 24, 48
    k = int(row["esd_method"].split()[0].removeprefix("top-"))
    assert k == 48 and 0 < row["num_pl_spikes"] <= k // 2


def test_analyze_rejects_bad_spectrum_options():
    sd = {"fc.weight": torch.randn(20, 10)}
    with pytest.raises(OptionError):
        analyze(sd, spectrum="fast")
    with pytest.raises(OptionError):
        analyze(sd, spectrum="approx", top_k=0)


@pytest.mark.slow
def test_a_50257_by_4096_embedding_is_analysed_with_the_approximate_spectrum():
    """A GPT-2-vocabulary embedding of width 4096, which WeightWatcher 0.7.7 skips silently (its limit is N <= 50,000
    rows): analysed, with a tail exponent, in float32 with the approximate spectrum."""
    rng = np.random.default_rng(0)
    w = torch.from_numpy((rng.standard_t(3, size=(50257, 4096)) / np.sqrt(50257)).astype(np.float32))
    row = analyze({"embed_tokens.weight": w}, dtype="float32", spectrum="approx").iloc[0]
    assert row["status"] == "ok" and row["kind"] == "embedding"
    assert row["num_evals"] == 4096 and np.isfinite(row["alpha"]) and row["D"] < 0.2
