"""Finite-n HTMP sampler (beta-Laguerre bidiagonal model) against the limiting law and exact references.

References: the HTMP CDF (scipy.stats.kstest), closed-form mean/variance (htmp.md Sec. 3.3), mpmath singular
values of the same bidiagonal matrix (relative accuracy of tiny eigenvalues), and a dense real Gaussian Wishart
matrix for kappa = inf.
"""
from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from hmu_diag import htmp
from hmu_diag.errors import OptionError
from hmu_diag.htmp import sampling


@pytest.mark.parametrize("gamma,kappa,seed", [
    (0.3255, 1.9, 0), (0.3255, 5.5, 1), (0.5, 0.5, 2), (0.25, 0.2, 3), (0.1, 20.3, 4), (0.9, 3.0, 5), (0.5, 2.0, 6),
])
def test_sample_passes_ks_against_cdf(gamma, kappa, seed):
    lam = htmp.sample(1000, gamma, kappa, scale=2.0, rng=seed)
    res = stats.kstest(lam, lambda x: htmp.cdf(x, gamma, kappa, scale=2.0))
    assert res.pvalue > 0.01, res


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 1.9), (0.5, 0.3)])
def test_inverse_sample_passes_ks_against_inverse_cdf(gamma, kappa):
    mu = htmp.sample(800, gamma, kappa, scale=0.5, rng=11, orientation="inverse")
    res = stats.kstest(mu, lambda x: htmp.cdf(x, gamma, kappa, scale=0.5, orientation="inverse"))
    assert res.pvalue > 0.01, res
    np.testing.assert_allclose(np.sort(1 / htmp.sample(800, gamma, kappa, scale=0.5, rng=11)), mu, rtol=1e-15)


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.5, 1.0)])
def test_sample_mean_and_second_moment_match_moments(gamma, kappa):
    scale, n, reps = 3.0, 400, 30
    draws = [htmp.sample(n, gamma, kappa, scale=scale, rng=100 + r) for r in range(reps)]
    means = np.array([d.mean() for d in draws])
    m2 = np.array([(d * d).mean() for d in draws])
    # E[mean eigenvalue] = scale exactly at finite n
    assert abs(means.mean() - htmp.mean(gamma, kappa, scale)) < 4 * means.std(ddof=1) / np.sqrt(reps) + 1e-12
    # exact finite-n E[tr (B B^T)^2]/n from chi-square moments E[X] = k, E[X^2] = k^2 + 2k (independent entries)
    beta, m = kappa / n, n / gamma
    i = np.arange(1, n + 1, dtype=float)
    kd = beta * (m - i + 1.0)
    kt = np.append(beta * (n - i[:-1]), 0.0)
    kt_prev = np.concatenate([[0.0], kt[:-1]])
    e_tr2 = np.sum(kd ** 2 + 2 * kd + 2 * kd * kt_prev + kt_prev ** 2 + 2 * kt_prev + 2 * kt * kd)
    exact = (scale * gamma / kappa) ** 2 * e_tr2 / n
    assert abs(m2.mean() - exact) < 4 * m2.std(ddof=1) / np.sqrt(reps)
    # and the finite-n value is close to the limit E[lambda^2] = scale^2 (1 + gamma + 2 gamma/kappa)
    assert exact == pytest.approx(htmp.moments(2, gamma, kappa, scale), rel=0.02)


def test_tiny_eigenvalues_have_high_relative_accuracy():
    """kappa -> 0 (rank collapse): eigenvalues down to 1e-200 must match 400-digit mpmath singular values."""
    n, gamma, kappa = 40, 0.3, 0.01
    gen = np.random.default_rng(7)
    i = np.arange(1, n + 1, dtype=float)
    d = sampling._chi(kappa / n * (n / gamma - i + 1.0), gen)
    sub = sampling._chi(kappa / n * (n - i[:-1]), gen)
    lam = sampling._laguerre_tridiagonal_eigs(n, kappa / n, n / gamma, np.random.default_rng(7))
    with mp.workdps(400):
        b = mp.zeros(n, n)
        for j in range(n):
            b[j, j] = mp.mpf(float(d[j]))
            if j < n - 1:
                b[j + 1, j] = mp.mpf(float(sub[j]))
        ref = np.array(sorted(float(v) ** 2 for v in mp.svd_r(b, compute_uv=False)))
    keep = ref > 1e-300
    assert ref[keep].min() < 1e-100
    np.testing.assert_allclose(lam[keep], ref[keep], rtol=1e-9)


def test_kappa_inf_is_a_real_wishart_spectrum():
    gamma, n = 0.4, 300
    lam = htmp.sample(n, gamma, np.inf, scale=2.0, rng=3)
    x = np.random.default_rng(4).standard_normal((n, int(n / gamma)))
    dense = np.linalg.eigvalsh(x @ x.T) * (2.0 / x.shape[1])
    assert stats.ks_2samp(lam, dense).pvalue > 0.01
    assert stats.kstest(lam, lambda v: htmp.mp_cdf(v, gamma, 2.0)).pvalue > 0.01


def test_sampler_is_deterministic_for_a_seed():
    a = htmp.sample(200, 0.5, 1.5, rng=42)
    np.testing.assert_array_equal(a, htmp.sample(200, 0.5, 1.5, rng=42))
    assert not np.array_equal(a, htmp.sample(200, 0.5, 1.5, rng=43))
    assert np.all(np.diff(a) >= 0) and a[0] > 0


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_n_raises(n):
    with pytest.raises(OptionError, match="n must be a positive integer"):
        htmp.sample(n, 0.5, 1.0)
