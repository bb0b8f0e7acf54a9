"""Marchenko-Pastur closed forms against quadrature, Narayana moments and real Gaussian Wishart eigenvalues."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from hmu_diag import htmp
from hmu_diag.errors import OptionError


@pytest.mark.parametrize("gamma,scale", [(0.1, 1.0), (0.3255, 2.5), (0.7, 0.3), (1.0, 1.0)])
def test_mp_pdf_normalised_with_closed_form_moments(gamma, scale):
    lo, hi = htmp.mp_edges(gamma, scale)
    assert (lo, hi) == pytest.approx((scale * (1 - math.sqrt(gamma)) ** 2, scale * (1 + math.sqrt(gamma)) ** 2))
    for k in range(4):
        val, _ = integrate.quad(lambda x: x ** k * htmp.mp_pdf(x, gamma, scale), lo, hi, epsabs=1e-12, limit=200)
        assert val == pytest.approx(htmp.mp_moment(k, gamma, scale), rel=1e-8)
    # Narayana closed forms: E = scale, E[x^2] = scale^2 (1 + gamma), E[x^3] = scale^3 (1 + 3 gamma + gamma^2)
    assert htmp.mp_moment(2, gamma, scale) == pytest.approx(scale ** 2 * (1 + gamma))
    assert htmp.mp_moment(3, gamma, scale) == pytest.approx(scale ** 3 * (1 + 3 * gamma + gamma ** 2))


@pytest.mark.parametrize("gamma,scale", [(0.1, 1.0), (0.5, 2.0), (1.0, 0.5)])
def test_mp_cdf_matches_quadrature(gamma, scale):
    lo, hi = htmp.mp_edges(gamma, scale)
    x = np.linspace(lo, hi, 9)[1:-1]
    ref = [integrate.quad(lambda u: htmp.mp_pdf(u, gamma, scale), lo, xi, epsabs=1e-13, limit=200)[0] for xi in x]
    np.testing.assert_allclose(htmp.mp_cdf(x, gamma, scale), ref, atol=1e-10)
    np.testing.assert_allclose(htmp.mp_sf(x, gamma, scale), 1 - np.array(ref), atol=1e-10)
    assert htmp.mp_cdf(lo * 0.99, gamma, scale) == 0.0 and htmp.mp_cdf(hi * 1.01, gamma, scale) == 1.0
    assert htmp.mp_pdf(hi * 1.01, gamma, scale) == 0.0


@pytest.mark.parametrize("n,m,scale,seed", [(300, 1000, 1.0, 0), (400, 500, 2.5, 1)])
def test_mp_cdf_against_real_gaussian_wishart_eigenvalues(n, m, scale, seed):
    x = np.random.default_rng(seed).standard_normal((n, m))
    lam = np.linalg.eigvalsh(x @ x.T) * (scale / m)
    res = stats.kstest(lam, lambda v: htmp.mp_cdf(v, n / m, scale))
    assert res.pvalue > 0.01, res
    assert lam.mean() == pytest.approx(scale, rel=0.02)


def test_mp_sample_matches_dense_wishart_and_moments():
    gamma, scale = 0.25, 1.5
    lam = htmp.mp_sample(800, gamma, scale, rng=5)
    assert stats.kstest(lam, lambda v: htmp.mp_cdf(v, gamma, scale)).pvalue > 0.01
    assert lam.var() == pytest.approx(gamma * scale ** 2, rel=0.05)


def test_negative_moments_and_stieltjes_of_the_kappa_inf_limit():
    gamma, scale = 0.3, 2.0
    lo, hi = htmp.mp_edges(gamma, scale)
    ref = [integrate.quad(lambda x: x ** k * htmp.mp_pdf(x, gamma, scale), lo, hi, epsabs=1e-13)[0] for k in (-1, -2)]
    np.testing.assert_allclose(htmp.moments([-1, -2], gamma, np.inf, scale), ref, rtol=1e-9)
    assert htmp.moments(-1, gamma, np.inf, scale) == pytest.approx(1 / ((1 - gamma) * scale))


def test_mp_bad_arguments():
    with pytest.raises(OptionError, match="gamma must be in"):
        htmp.mp_pdf(1.0, 2.0)
    with pytest.raises(OptionError, match="scale must be finite and > 0"):
        htmp.mp_cdf(1.0, 0.5, scale=0.0)
    with pytest.raises(OptionError, match="k must be"):
        htmp.mp_moment(-1, 0.5)
