"""Weight ESDs against exact dense references (LAPACK SVD of the same matrix)."""
import numpy as np
import pytest
import torch

from hmu_diag.errors import OptionError
from hmu_diag.spectra import weights
from hmu_diag.spectra.weights import weight_spectrum


def svd_evals(w: torch.Tensor) -> np.ndarray:
    return np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(300, 100), (100, 300), (64, 64)])
def test_eigenvalues_are_squared_singular_values(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    s = weight_spectrum(w)
    ref = svd_evals(w)
    assert s.N == max(shape) and s.M == min(shape) and s.n_matrices == 1
    assert s.evals.shape == ref.shape and np.all(np.diff(s.evals) >= 0)
    np.testing.assert_allclose(s.evals, ref, rtol=1e-10, atol=1e-10 * ref.max())
    assert s.dtype == "float64" and s.gamma == pytest.approx(min(shape) / max(shape))


@pytest.mark.parametrize("scipy_min_m", [10**9, 1])          # torch's eigvalsh, and scipy's syrk + syevd
def test_blocked_gram_of_tall_matrix_matches_dense(monkeypatch, scipy_min_m):
    monkeypatch.setattr(weights, "_GRAM_BLOCK_ROWS", 97)  # force many uneven row blocks
    monkeypatch.setattr(weights, "_SCIPY_MIN_M", scipy_min_m)
    w = torch.randn(1000, 40, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(weight_spectrum(w).evals, svd_evals(w), rtol=1e-10)
    np.testing.assert_allclose(weight_spectrum(w.T.contiguous()).evals, svd_evals(w), rtol=1e-10)
    np.testing.assert_allclose(weight_spectrum(w.T).evals, svd_evals(w), rtol=1e-10)      # a non-contiguous view


@pytest.mark.parametrize("shape", [(1500, 600), (600, 1500)])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_syrk_path_of_large_matrices_matches_svd(shape, dtype, rtol):
    """M >= 512 goes through BLAS syrk (one triangle of the Gram) + LAPACK syevd; grad-tracking weights are fine."""
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
    s = weight_spectrum(w, dtype=dtype)
    ref = svd_evals(w.detach())
    assert s.dtype == dtype and s.evals.dtype == np.float64 and s.M == 600
    np.testing.assert_allclose(s.evals, ref, rtol=rtol, atol=rtol * ref.max())
    assert s.trace == pytest.approx(float((w.detach().double() ** 2).sum()), rel=1e-6)


def test_batch_pools_all_slices():
    g = torch.Generator().manual_seed(2)
    batch = torch.randn(9, 20, 30, generator=g)
    s = weight_spectrum(batch)
    ref = np.sort(np.concatenate([svd_evals(m) for m in batch]))
    assert s.n_matrices == 9 and s.evals.size == 9 * 20
    np.testing.assert_allclose(s.evals, ref, rtol=1e-10, atol=1e-12)


def test_float32_is_close_and_labelled():
    w = torch.randn(200, 80, generator=torch.Generator().manual_seed(3))
    s32 = weight_spectrum(w, dtype="float32")
    assert s32.dtype == "float32"
    np.testing.assert_allclose(s32.evals, svd_evals(w), rtol=1e-4, atol=1e-5 * s32.evals[-1])


def test_rank_loss_counts_numerical_zeros():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(50, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 30, generator=g, dtype=torch.float64)
    s = weight_spectrum(w)
    assert s.rank_loss == 25
    assert s.nonzero.size == 5
    np.testing.assert_allclose(s.nonzero, svd_evals(w)[-5:], rtol=1e-10)


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(OptionError, match="float16"):
        weight_spectrum(torch.ones(3, 3), dtype="float16")


@pytest.mark.parametrize("exponent", [70, -75])
@pytest.mark.parametrize("shape", [(60, 40), (700, 600)])        # torch eigvalsh path and scipy syrk + syevd path
def test_float32_gram_over_or_underflow_is_rescaled_exactly(exponent, shape):
    """|w| ~ 2^70 overflows a float32 WᵀW (max ~2^128) and 2^-75 underflows it to zero (min ~2^-149), yet the
    eigenvalues fit in the float64 result: the power-of-two rescaling returns 4^e times the spectrum of the unscaled
    matrix, never inf, a LAPACK failure or false rank loss."""
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    s = weight_spectrum(w * 2.0 ** exponent, dtype="float32")
    ref = svd_evals(w)
    np.testing.assert_allclose(np.ldexp(s.evals, -2 * exponent), ref, rtol=1e-4, atol=1e-5 * ref[-1])
    assert s.rank_loss == 0


@pytest.mark.parametrize("exponent", [520, -500])
def test_eigenvalues_beyond_float64_are_an_error_not_zeros(exponent):
    from hmu_diag.errors import HmuDiagError

    w = torch.randn(60, 40, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 2.0 ** exponent
    with pytest.raises(HmuDiagError, match="outside the float64 range"):
        weight_spectrum(w)
    assert weight_spectrum(torch.zeros(60, 40, dtype=torch.float64)).rank_loss == 40       # a zero matrix stays zero
