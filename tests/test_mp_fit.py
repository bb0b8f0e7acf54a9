"""Marchenko-Pastur fit (hmu_diag.fits.mp): scale, Tracy-Widom spike edge, KS distance and binned likelihood.

References: dense eigendecompositions of Gaussian matrices with known entry variance, published TW1 quantiles,
scipy.stats.kstest and scipy.stats.multinomial.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from hmu_diag.errors import OptionError
from hmu_diag.fits.mp import MPFit, binned_loglik, bins, fit_mp, ks_distance, tw1_quantile, tw_threshold
from hmu_diag.htmp import mp_cdf, mp_sample


def _wishart_evals(m: int, n: int, var: float, rng: np.random.Generator, spikes=()) -> np.ndarray:
    """Eigenvalues of W W^T, W an m x n matrix of N(0, var) entries plus rank-one spikes u v^T of given strengths."""
    w = rng.standard_normal((m, n)) * math.sqrt(var)
    for s in spikes:
        u, v = rng.standard_normal(m), rng.standard_normal(n)
        w = w + s * math.sqrt(var) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(n)
    return np.linalg.eigvalsh(w @ w.T)


def test_tw1_quantiles_match_published_table():
    # Tracy-Widom beta=1 quantiles (Bejan 2005; Tracy & Widom 1996): 0.95 -> 0.9793, 0.99 -> 2.0234, 0.5 -> -1.2680
    assert tw1_quantile(0.95) == pytest.approx(0.9793, abs=0.01)
    assert tw1_quantile(0.99) == pytest.approx(2.0234, abs=0.02)
    assert tw1_quantile(0.50) == pytest.approx(-1.2680, abs=0.01)


@pytest.mark.parametrize("m,n", [(200, 400), (150, 150), (100, 1000)])
def test_scale_bulk_edges_and_ks_on_white_wishart(m, n):
    rng = np.random.default_rng(1)
    var = 0.3
    ev = _wishart_evals(m, n, var, rng)
    f = fit_mp(ev, m / n)
    assert f.ok and f.num_spikes == 0
    assert f.scale == pytest.approx(n * var, rel=0.02)          # mean eigenvalue of W W^T is n var
    g = m / n
    assert f.bulk_max == pytest.approx(f.scale * (1 + math.sqrt(g)) ** 2)
    assert f.bulk_min == pytest.approx(f.scale * (1 - math.sqrt(g)) ** 2)
    ref = stats.kstest(ev, lambda x: mp_cdf(x, g, f.scale)).statistic
    assert f.D == pytest.approx(ref, abs=1e-12)
    assert f.D < 0.06


def test_false_spike_rate_is_close_to_alpha():
    """White Wishart layers: the TW edge is exceeded with probability ~alpha (Johnstone centring and scaling)."""
    rng = np.random.default_rng(7)
    m, n, reps, alpha = 100, 300, 200, 0.1
    hits = sum(fit_mp(_wishart_evals(m, n, 1.0, rng), m / n, alpha=alpha).num_spikes > 0 for _ in range(reps))
    # binomial(200, 0.1): 99.9% band is about [7, 35]; the Chiani TW approximation and N-1 centring are ~exact here
    assert 7 <= hits <= 35


def test_threshold_formula_is_johnstone():
    m, n, q = 300, 900, tw1_quantile(0.99)
    mu = (math.sqrt(n - 1) + math.sqrt(m)) ** 2
    sig = (math.sqrt(n - 1) + math.sqrt(m)) * (1 / math.sqrt(n - 1) + 1 / math.sqrt(m)) ** (1 / 3)
    assert tw_threshold(2.0, m / n, m, alpha=0.01) == pytest.approx(2.0 / n * (mu + sig * q))
    # pooling more matrices raises the edge (maximum of several largest eigenvalues)
    assert tw_threshold(2.0, m / n, m, alpha=0.01, n_matrices=9) > tw_threshold(2.0, m / n, m, alpha=0.01)


def test_planted_spikes_are_counted_and_do_not_move_the_scale():
    rng = np.random.default_rng(3)
    m, n = 300, 900
    clean = fit_mp(_wishart_evals(m, n, 1.0, np.random.default_rng(3)), m / n)
    spiked_ev = _wishart_evals(m, n, 1.0, rng, spikes=(3.0, 4.0, 6.0))   # all well above the BBP point gamma^(1/4)
    f = fit_mp(spiked_ev, m / n)
    assert f.num_spikes == 3
    assert np.sum(spiked_ev > f.spike_threshold) == 3
    assert f.scale == pytest.approx(clean.scale, rel=0.02)
    no = fit_mp(spiked_ev, m / n, spikes=False)
    assert no.num_spikes == 0 and math.isinf(no.spike_threshold)


def test_binned_loglik_matches_scipy_multinomial():
    rng = np.random.default_rng(5)
    x = np.sort(rng.gamma(3.0, size=400))
    edges, counts = bins(x, 16)
    assert counts.sum() == x.size and len(counts) == len(edges) + 1
    assert counts.max() - counts.min() <= 1                  # equal-count bins
    cdf = stats.gamma(3.0).cdf(edges)
    p = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    log_coef = special.gammaln(x.size + 1) - special.gammaln(counts + 1).sum()
    assert binned_loglik(counts, cdf) == pytest.approx(stats.multinomial.logpmf(counts, x.size, p) - log_coef)


def test_ks_distance_subset_is_a_lower_bound():
    rng = np.random.default_rng(2)
    x = np.sort(rng.normal(size=300))
    full = ks_distance(stats.norm.cdf(x), x.size)
    assert full == pytest.approx(stats.kstest(x, "norm").statistic)
    ranks = np.arange(0, 300, 7)
    part = ks_distance(stats.norm.cdf(x[ranks]), x.size, ranks)
    assert part <= full + 1e-15 and part > full - 7 / 300


def test_degenerate_inputs_fail_softly_and_options_raise():
    assert not fit_mp([1.0, 2.0, 3.0], 0.5).ok
    f = fit_mp(np.ones(50), 0.5)
    assert f.status == "failed: all eigenvalues equal" and math.isnan(f.scale)
    ev = np.concatenate([_wishart_evals(50, 100, 1.0, np.random.default_rng(0)), [0.0, -1.0, np.nan, np.inf]])
    g = fit_mp(ev, 0.5)
    assert g.ok and g.n == 50 and g.n_dropped == 4
    assert "MPFit(scale=" in repr(g)
    for bad in (0.0, 1.5, float("nan"), "x"):
        with pytest.raises(OptionError, match="gamma"):
            fit_mp(ev, bad)
    with pytest.raises(OptionError, match="alpha"):
        fit_mp(ev, 0.5, alpha=2.0)
    assert isinstance(g, MPFit)


def test_fit_mp_many_gives_each_spectrum_the_fit_it_gets_alone():
    """A batch of spectra (pooled slices, spikes, gamma = 1, too few values, all equal) fitted together gives each the
    fit it gets alone, field by field, in any order."""
    from dataclasses import astuple

    from hmu_diag.fits.mp import fit_mp_many
    rng = np.random.default_rng(3)
    spiked = np.concatenate([mp_sample(200, 0.25, 1.0, rng=1), [30.0, 45.0]])
    batch = [(spiked, 0.25, 1), (mp_sample(300, 1.0, 2.0, rng=2), 1.0, 1), (mp_sample(64, 0.5, 1.0, rng=3), 0.5, 4),
             (rng.pareto(2.0, 500) + 1.0, 0.1, 1), (np.ones(20), 0.3, 1), (np.array([1.0, 2.0]), 0.3, 1)]
    together = fit_mp_many([e for e, _, _ in batch], [g for _, g, _ in batch], n_matrices=[b for _, _, b in batch])
    reordered = fit_mp_many([e for e, _, _ in batch[::-1]], [g for _, g, _ in batch[::-1]],
                            n_matrices=[b for _, _, b in batch[::-1]])[::-1]
    for (evals, gamma, b), got, again in zip(batch, together, reordered):
        alone = fit_mp(evals, gamma, n_matrices=b)
        assert str(astuple(got)) == str(astuple(alone)) == str(astuple(again))
    assert together[0].num_spikes >= 2 and together[-1].status.startswith("failed")
