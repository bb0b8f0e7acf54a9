"""HTMP fit (hmu_diag.fits.htmp): parameter recovery on samples with known kappa, CIs, orientation, spikes.

References: samples of known (gamma, kappa, scale) from hmu_diag.htmp.sample (finite-n beta-Laguerre model),
direct Monte-Carlo of the chi-square bidiagonal model, quadrature of the MP density, scipy.stats.kstest.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from numpy.polynomial import polynomial as P
from scipy import integrate, special, stats

from hmu_diag import htmp
from hmu_diag.errors import OptionError
from hmu_diag.fits._kappa_law import _cubic_sum_rule, _ratio_mean, _ratio_sd
from hmu_diag.fits.htmp import KAPPA_MP_EQUIV, HTMPFit, fit, kappa_moments, log_stat_moments, log_stat_mp
from hmu_diag.fits.htmp import fit_many as htmp_fit_many
from hmu_diag.htmp._accuracy import FIT_CDF_ATOL

GAMMAS = (0.1, 0.33, 0.5, 0.9)
KAPPAS = (0.3, 1.0, 2.0, 5.5, 20.0)
FAST_GRID = ((0.1, 0.3), (0.33, 1.0), (0.5, 2.0), (0.9, 5.5), (0.33, 20.0))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _bidiagonal_stats(kappa, gamma, n, reps, rng):
    """Monte-Carlo of L = log mean - mean log and R = mean(l^2)/mean^2 from the chi-square bidiagonal model."""
    i = np.arange(n, dtype=float)
    d2 = rng.chisquare(kappa / gamma - kappa * i / n, size=(reps, n))
    t2 = rng.chisquare(kappa * (n - 1 - i[:-1]) / n, size=(reps, n - 1))
    diag = d2.copy()
    diag[:, 1:] += t2
    tr1 = diag.sum(1)
    tr2 = (diag**2).sum(1) + 2 * (t2 * d2[:, :-1]).sum(1)
    return np.log(tr1 / n) - np.log(d2).mean(1), n * tr2 / tr1**2


@pytest.mark.parametrize("gamma,kappa", [(0.33, 1.9), (0.5, 0.5), (0.9, 10.0)])
def test_log_statistic_mean_and_variance_match_monte_carlo(gamma, kappa):
    n = 200
    stat, _ = _bidiagonal_stats(kappa, gamma, n, 20000, np.random.default_rng(0))
    mean, var = log_stat_moments(np.array([kappa]), gamma, n)
    assert mean[0] == pytest.approx(stat.mean(), abs=4 * stat.std() / math.sqrt(stat.size) + 1e-3 * abs(stat.mean()))
    assert var[0] == pytest.approx(stat.var(), rel=0.05)


def test_log_statistic_limits():
    """n -> inf: htmp.md sec. 4.3 closed form; kappa -> inf: log E - E log of MP by quadrature."""
    g, k = 0.3255, 5.5
    s, d = k / (2 * g), k * (1 - g) / (2 * g)
    closed = math.log(s) - (2 / k) * (special.gammaln(s) - special.gammaln(d))
    assert log_stat_moments(np.array([k]), g, 200000)[0][0] == pytest.approx(closed, rel=1e-4)
    lo, hi = (1 - math.sqrt(g)) ** 2, (1 + math.sqrt(g)) ** 2
    e_log = integrate.quad(lambda x: math.log(x) * htmp.mp_pdf(x, g, 1.0), lo, hi, limit=200)[0]
    assert log_stat_mp(g, 100000) == pytest.approx(-e_log, rel=1e-4)
    assert log_stat_moments(np.array([1e6]), g, 1000)[0][0] == pytest.approx(log_stat_mp(g, 1000), rel=1e-3)


@pytest.mark.parametrize("gamma,kappa", [(1.0, 2.0), (0.97, 5.5)])
def test_second_moment_ratio_mean_and_sd_match_monte_carlo(gamma, kappa):
    n = 300
    _, r = _bidiagonal_stats(kappa, gamma, n, 8000, np.random.default_rng(1))
    assert _ratio_mean(kappa, gamma, n) == pytest.approx(r.mean(), rel=0.01)
    assert _ratio_sd(kappa, gamma, n) == pytest.approx(r.std(), rel=0.08)
    assert _ratio_mean(1e9, gamma, 10**6) == pytest.approx(1 + gamma, rel=1e-4)     # MP: Var = gamma scale^2


def _ratio_sd_term_by_term(kappa, gamma, n):
    """The delta-method sd of R summed over i = 0..n-1 term by term from the raw chi-square moments
    m_r = k (k+2) ... (k+2r-2), neighbours by shifting arrays (X_n = Y_{-1} = 0): the O(n) reference."""
    i = np.arange(n, dtype=np.float64)
    kx, ky = kappa / gamma - kappa * i / n, kappa * (n - 1 - i) / n
    m1x, m2x, m3x, m4x = kx, kx * (kx + 2), kx * (kx + 2) * (kx + 4), kx * (kx + 2) * (kx + 4) * (kx + 6)
    m1y, m2y, m3y, m4y = ky, ky * (ky + 2), ky * (ky + 2) * (ky + 4), ky * (ky + 2) * (ky + 4) * (ky + 6)
    vx, vy, cx, cy = 2 * kx, 2 * ky, m3x - m2x * m1x, m3y - m2y * m1y

    def nxt(a):
        return np.append(a[1:], 0.0)
    nx1, nx2, nvx, ncx, my_prev = nxt(m1x), nxt(m2x), nxt(vx), nxt(cx), np.concatenate(([0.0], m1y[:-1]))
    var_q = (np.sum(m4x - m2x**2) + np.sum(m4y - m2y**2)
             + 4 * np.sum(m2y * m2x - m1y**2 * m1x**2) + 4 * np.sum(m2y * nx2 - m1y**2 * nx1**2)
             + 2 * (2 * np.sum(m1y * cx) + 2 * np.sum(m1y * ncx) + 2 * np.sum(m1x * cy) + 2 * np.sum(nx1 * cy)
                    + 4 * np.sum(m1x * nx1 * (m2y - m1y**2)) + 4 * np.sum(nxt(m1y) * m1y * nvx)))
    cov_qs = np.sum(cx + 2 * (my_prev + m1y) * vx) + np.sum(cy + 2 * (m1x + nx1) * vy)
    var_s, e_s = np.sum(vx) + np.sum(vy), np.sum(m1x) + np.sum(m1y)
    e_q = np.sum(m2x) + np.sum(m2y) + 2 * np.sum(m1y * (m1x + nx1))
    grad_q, grad_s = n / e_s**2, -2 * n * e_q / e_s**3
    return math.sqrt(grad_q**2 * var_q + 2 * grad_q * grad_s * cov_qs + grad_s**2 * var_s)


@pytest.mark.parametrize("n", [2, 4, 5, 16, 768, 100_000])
def test_second_moment_sd_in_closed_form_equals_the_term_by_term_sum(n):
    for gamma in (0.3, 0.96, 1.0):
        for kappa in (1e-3, 0.5, 2.0, 200.0, 1e5):
            assert _ratio_sd(kappa, gamma, n) == pytest.approx(_ratio_sd_term_by_term(kappa, gamma, n), rel=1e-8)


@pytest.mark.parametrize("n", [1, 3, 5, 7, 100, 10**6])
def test_cubic_sum_rule_sums_every_cubic_exactly(n):
    nodes, weights = _cubic_sum_rule(n)
    i = np.arange(n, dtype=np.float64)
    for coef in np.random.default_rng(n).standard_normal((5, 4)):
        assert weights @ P.polyval(nodes, coef) == pytest.approx(P.polyval(i, coef).sum(), rel=1e-10, abs=1e-9)


def _recovery(grid, reps, n):
    """kappa estimates and CI hits on samples of HTMP(gamma, kappa, scale 2.5) (hmu_diag.htmp.sample)."""
    out = []
    for gamma, kappa in grid:
        for r in range(reps):
            x = htmp.sample(n, gamma, kappa, 2.5, rng=1000 * r + int(100 * gamma) + int(10 * kappa))
            f = fit(x, gamma, "direct")
            out.append((gamma, kappa, f.kappa, f.kappa_lo <= kappa <= f.kappa_hi, f.scale))
    return out


def _check_recovery(res, min_coverage):
    cover = np.mean([hit for *_, hit, _ in res])
    assert cover >= min_coverage, f"CI coverage {cover:.2f}"
    for gamma, kappa in {(g, k) for g, k, *_ in res}:
        est = np.array([e for g, k, e, *_ in res if (g, k) == (gamma, kappa)])
        scale = np.array([s for g, k, *_, s in res if (g, k) == (gamma, kappa)])
        assert np.median(np.abs(est / kappa - 1)) < 0.15, (gamma, kappa, est)
        if kappa <= 5.5:                                  # sd of kappa_hat grows like kappa^1.5/sqrt(n)
            assert np.mean(np.abs(est / kappa - 1) < 0.15) >= 0.8, (gamma, kappa, est)
        # finite-n model: mean = scale chi2(n kappa/gamma) / (n kappa/gamma), relative sd sqrt(2 gamma/(n kappa))
        assert np.all(np.abs(scale / 2.5 - 1) < 4.5 * math.sqrt(2 * gamma / (1000 * kappa))), (gamma, kappa, scale)


def test_parameter_recovery_subset():
    """Fast subset: kappa within 15% and the 95% CI covering kappa at about the nominal rate (n = 1000)."""
    res = _recovery(FAST_GRID, reps=6, n=1000)
    _check_recovery(res, min_coverage=0.83)              # 30 intervals: P(coverage < 0.83 | 95%) ~ 1%


@pytest.mark.slow
def test_parameter_recovery_full_grid():
    res = _recovery([(g, k) for g in GAMMAS for k in KAPPAS], reps=20, n=1000)
    _check_recovery(res, min_coverage=0.92)              # 400 intervals at nominal 95%


@pytest.mark.parametrize("gamma", [1.0, 0.97])
def test_square_layers_use_second_moment(gamma):
    x = htmp.sample(800, gamma, 3.0, 1.0, rng=4)
    f = fit(x, gamma, "direct")
    assert f.statistic == "second-moment" and "second-moment" in f.ci_method
    assert f.kappa_lo <= 3.0 <= f.kappa_hi and abs(f.kappa / 3.0 - 1) < 0.2


def test_mp_samples_give_infinite_kappa():
    for gamma in (0.25, 0.5, 1.0):
        f = fit(htmp.sample(1000, gamma, np.inf, 3.0, rng=2), gamma)
        assert math.isinf(f.kappa) and math.isinf(f.kappa_hi)
        assert math.isinf(f.delta) if gamma < 1 else f.delta == 0.0     # delta = kappa (1-gamma)/(2 gamma)
        assert f.orientation == "direct" and f.n_spikes == 0
        assert f.scale == pytest.approx(3.0, rel=0.02)
    # a white Gaussian layer is the Dyson-index-1 member: kappa = n > KAPPA_MP_EQUIV, reported as MP
    rng = np.random.default_rng(0)
    w = rng.standard_normal((400, 1600))
    f = fit(np.linalg.eigvalsh(w @ w.T), 0.25)
    assert math.isinf(f.kappa) and f.kappa_lo > 0.5 * KAPPA_MP_EQUIV


@pytest.mark.parametrize("gamma,kappa", [(0.33, 1.9), (0.5, 5.5)])
def test_orientation_auto_picks_the_generating_one(gamma, kappa):
    direct = htmp.sample(1000, gamma, kappa, 1.0, rng=11)
    inverse = htmp.sample(1000, gamma, kappa, 1.0, rng=12, orientation="inverse")
    fd, fi = fit(direct, gamma), fit(inverse, gamma)
    assert fd.orientation == "direct" and fi.orientation == "inverse"
    assert fd.kappa_lo <= kappa <= fd.kappa_hi and fi.kappa_lo <= kappa <= fi.kappa_hi
    # inverse fit: scale is the mean of 1/lambda
    assert fi.scale == pytest.approx(np.mean(1.0 / inverse), rel=1e-12)
    assert fi.D < fit(inverse, gamma, "direct").D


def test_tail_predictions_formulas():
    """delta = kappa (1-gamma)/(2 gamma); htmp.md sec. 3.6 table: gamma 0.5, alpha 3 <-> kappa 4."""
    x = htmp.sample(1000, 0.5, 4.0, 1.0, rng=5)
    f = fit(x, 0.5, "direct")
    assert f.delta == pytest.approx(f.kappa * 0.5 / 1.0)
    assert f.pred_alpha == pytest.approx(1 + f.delta) and f.pred_lower_exp == pytest.approx(f.delta - 1)
    assert f.pred_alpha == pytest.approx(3.0, rel=0.15)


def test_spikes_are_excluded_and_reported():
    x = htmp.sample(1000, 0.33, 1.9, 1.0, rng=6)
    clean = fit(x, 0.33, "direct")
    spiked = np.concatenate([x, x.max() * np.array([5.0, 8.0, 12.0])])
    f = fit(spiked, 0.33, "direct")
    assert f.n_spikes >= 3
    assert f.kappa == pytest.approx(clean.kappa, rel=0.05)
    g = fit(spiked, 0.33, "direct", spikes=False)
    assert g.n_spikes == 0 and g.kappa < 0.9 * clean.kappa   # the outliers would fake a heavier tail


def _spiked_spectra(count: int, seed: int) -> tuple[list[np.ndarray], list[float]]:
    """HTMP samples with a few values pushed out above and below the bulk (they peel off over several rounds)."""
    rng = np.random.default_rng(seed)
    xs, gammas = [], []
    for _ in range(count):
        gamma, n = float(rng.choice([0.25, 0.5, 0.8, 1.0])), int(rng.choice([40, 150, 600]))
        x = htmp.sample(n, gamma, float(np.exp(rng.uniform(-0.5, 3.0))), rng=rng)
        k = int(rng.integers(1, n // 4))
        x[-k:] *= np.exp(rng.uniform(0.3, 2.5, k))
        x[:k] *= np.exp(-rng.uniform(0.3, 3.0, k))
        xs.append(x)
        gammas.append(gamma)
    return xs, gammas


def test_batched_spike_rounds_equal_one_round_at_a_time(monkeypatch):
    """The spike rounds evaluate several candidate bulks per batch and follow each series' chain through them; with
    one candidate per series (one round per batch) every fit is the same, field by field.  (This batch has chains that
    reach the round limit inside a batch of candidates, where a chain must stop.)"""
    import hmu_diag.fits.htmp as htmp_fit
    xs, gammas = _spiked_spectra(24, seed=2)
    batched = htmp_fit_many(xs, gammas)
    monkeypatch.setattr(htmp_fit, "_SPECULATIVE_ROWS", 1)
    one_round = htmp_fit_many(xs, gammas)
    assert batched == one_round
    assert sum(f.n_spikes >= 3 for f in batched) >= 5          # chains of several rounds were followed


def test_spectra_spanning_hundreds_of_decades_fit_in_both_orientations():
    """1/lambda of a square HTMP sample at small kappa spans ~1e300: once its largest values are excluded as spikes,
    the bulk lies below 1e-100 of them, and its moments (squares, means) are taken on its own scale instead of
    underflowing (this raised ValueError from a NaN kappa).  The inverse law fits it badly; "auto" picks direct."""
    x = htmp.sample(300, 1.0, 0.3, rng=0)
    assert x[x > 0].min() < 1e-300 * x.max()
    inverse, auto = fit(x, 1.0, "inverse"), fit(x, 1.0)
    assert inverse.ok and inverse.n_spikes > 0 and inverse.D > 0.5
    assert auto.ok and auto.orientation == "direct" and auto.D < 0.1 and 0.1 < auto.kappa < 1.0


@pytest.mark.parametrize("gamma,kappa,n", [(0.1, 2.0, 64), (0.25, 20.0, 300), (0.5, 1.0, 1000), (0.8, 5.0, 40),
                                           (0.97, 3.0, 200), (0.99, 40.0, 1000), (0.01, 1.0, 500), (1.0, 0.7, 100)])
def test_spike_threshold_is_the_upper_quantile_whatever_the_largest_value(gamma, kappa, n):
    """The spike cutoff of a fitted law is its 1 - alpha/n quantile (checked against the exact survival function).
    Where the bulk's largest value lies far below it, a law the quantile table covers still gets it; one it does not
    cover (gamma 0.97) may keep the Gamma-tail quantile, an upper bound, as nothing can lie between.  That bound used
    to stand in for the cutoff whenever the largest value lay below it (it is up to 25% higher), which let values in
    between pass as bulk."""
    from hmu_diag.fits.htmp import _GUESS_LOWER_BOUND, _upper_thresholds
    from hmu_diag.htmp._accuracy import fit_mode
    alpha, scale = 0.01, 2.5
    args = (np.array([gamma]), np.array([kappa]), np.array([scale]), np.array([float(n)]), np.array([n]), alpha)
    with fit_mode():
        low, high = (_upper_thresholds(*args, np.array([y]))[0] for y in (scale, 1e3 * scale))
    sf = float(htmp.sf(np.array([high]), gamma, kappa, scale)[0])      # exact evaluation, outside fit mode
    tabulated = 0.0196 <= gamma <= 0.952 or gamma == 1.0
    assert sf == pytest.approx(alpha / n, rel=0.01 if tabulated else 0.15)    # else: fit-mode sf on a grid
    if tabulated:
        assert low == pytest.approx(high, rel=1e-12)
    else:                       # the Gamma-tail bound stays: it lies above the quantile, and not too far
        assert high <= low * (1.0 + 1e-6) and high >= _GUESS_LOWER_BOUND * low and high > scale


def test_spike_rounds_never_readmit_so_they_cannot_cycle(monkeypatch):
    """A zoo layer (square 128 x 128 fc2 of the weight-decay 2e-3 model) whose spike thresholds move back up: when
    values below a raised threshold were re-admitted, the bulks cycled (116, 109, 113, 115, 116, ... of 127) and the
    fit depended on where the round limit cut the cycle (kappa 0.20 direct after 6 rounds, 0.32 inverse after 20).
    Excluded values now stay excluded: the rounds stop at the first bulk with nothing above its threshold, and more
    rounds change nothing."""
    from pathlib import Path

    import hmu_diag.fits.htmp as htmp_fit
    from hmu_diag.pipeline import compute_spectra

    model = Path(__file__).resolve().parents[1] / "models_zoo/digits/weight_decay/wd2em03.safetensors"
    spectrum = compute_spectra(str(model))[(model.name, "fc2")]
    x, gamma = spectrum.nonzero, spectrum.gamma
    fits = {}
    for rounds in (6, 20):
        monkeypatch.setattr(htmp_fit, "_MAX_SPIKE_ROUNDS", rounds)
        fits[rounds] = fit(x, gamma)
    assert fits[6] == fits[20]
    assert fits[6].n_spikes > 0 and fits[6].ok
    for side in ("direct", "inverse"):                   # each orientation's bulk: nothing above its own threshold
        one = fit(x, gamma, side)
        bulk = np.sort(x)[:x.size - one.n_spikes] if side == "direct" else np.sort(x)[one.n_spikes:]
        again = fit(bulk, gamma, side)
        assert again.n_spikes == 0 and again.kappa == pytest.approx(one.kappa, rel=1e-12)


@pytest.mark.parametrize("gamma,kappa", [(0.33, 1.9), (1.0, 2.0), (0.8, 5.0)])
def test_goodness_of_fit_matches_scipy_kstest(gamma, kappa):
    """D of the fit (fit mode: tabulated quantiles, CDF error < FIT_CDF_ATOL) equals scipy's KS statistic against
    the exact CDF at the fitted parameters; gamma = 1 is the square-layer row of the table."""
    x = htmp.sample(60, gamma, kappa, 1.0, rng=8)    # n <= 64: D is evaluated at every point
    f = fit(x, gamma, "direct", spikes=False)
    assert math.isfinite(f.kappa)
    ref = stats.kstest(x, lambda v: htmp.cdf(v, gamma, f.kappa, f.scale)).statistic
    assert f.D == pytest.approx(ref, abs=FIT_CDF_ATOL)


def test_goodness_of_fit_beats_mp_on_htmp_data():
    y = htmp.sample(1000, 0.33, 1.9, 1.0, rng=9)
    g = fit(y, 0.33)
    assert g.D < g.mp_D and g.loglik > g.mp_loglik


def test_bootstrap_ci():
    x = htmp.sample(300, 0.5, 2.0, 1.0, rng=10)
    f = fit(x, 0.5, "direct", ci="bootstrap", n_boot=40, seed=3)
    assert f.ci_method.startswith("bootstrap")
    assert f.kappa_lo < f.kappa < f.kappa_hi and f.kappa_lo <= 2.0 <= f.kappa_hi
    a = fit(x, 0.5, "direct")                        # the asymptotic band has a similar width
    assert 0.5 < math.log(f.kappa_hi / f.kappa_lo) / math.log(a.kappa_hi / a.kappa_lo) < 2.0
    assert fit(x, 0.5, "direct", ci="bootstrap", n_boot=40, seed=3) == f   # deterministic for a seed


def test_square_inverse_fit_of_a_huge_dynamic_range_does_not_overflow():
    """gamma = 1, kappa = 0.5: the smallest eigenvalues are ~1e-200, so 1/lambda reaches 1e200 and sum(y^2) would
    overflow; the moment statistics are scale-free and computed on y/max(y)."""
    x = htmp.sample(768, 1.0, 0.5, 1.0, rng=np.random.default_rng(1))
    assert 1.0 / x.min() > 1e150
    f = fit(x, 1.0)
    assert f.ok and f.orientation == "direct" and f.kappa_lo <= 0.5 <= f.kappa_hi
    assert fit(x, 1.0, "inverse").ok


def test_kappa_moments_extremes():
    x = htmp.sample(500, 0.33, 1e-3, 1.0, rng=1)
    k, lo, hi, stat = kappa_moments(x[x > 1e-300], 0.33)
    assert stat == "log-moment" and k < 0.01 and hi < 0.01


def test_degenerate_and_invalid():
    assert not fit([1.0, 2.0], 0.5).ok
    f = fit(np.full(40, 2.0), 0.5)
    assert f.status == "failed: all eigenvalues equal" and math.isnan(f.kappa) and "failed" in repr(f)
    g = fit(np.concatenate([htmp.sample(100, 0.5, 2.0, rng=0), [0.0, -1.0, np.nan]]), 0.5)
    assert g.ok and g.n == 100 and g.n_dropped == 3 and "HTMPFit(kappa=" in repr(g)
    for kw, msg in (({"orientation": "up"}, "orientation"), ({"ci": "exact"}, "ci"), ({"method": "x"}, "method"),
                    ({"level": 1.5}, "level"), ({"ci": "bootstrap", "n_boot": 2}, "n_boot")):
        with pytest.raises(OptionError, match=msg):
            fit(g and np.arange(1.0, 50.0), 0.5, **kw)
    with pytest.raises(OptionError, match="gamma"):
        fit(np.arange(1.0, 50.0), 2.0)
    assert isinstance(g, HTMPFit) and htmp.fit is fit and htmp.HTMPFit is HTMPFit


@pytest.mark.slow
def test_moments_vs_ml_vs_ks():
    """Which estimator recovers kappa best (justifies the default, see the module docstring of fits/htmp.py)."""
    err = {"moments": [], "ml": [], "ks": []}
    for gamma, kappa in ((0.33, 1.0), (0.5, 5.5)):
        for r in range(12):
            x = htmp.sample(500, gamma, kappa, 1.0, rng=100 + r)
            for m in err:
                err[m].append(math.log(fit(x, gamma, "direct", method=m).kappa / kappa))
    rmse = {m: float(np.sqrt(np.mean(np.square(v)))) for m, v in err.items()}
    assert rmse["ml"] < rmse["ks"]                   # measured: 0.082 vs 0.15
    assert rmse["moments"] < 1.3 * rmse["ml"]         # measured: 0.097 (1.18 x ML) at 1/5 - 1/20 of the cost


def test_extreme_parameters_give_up_on_the_law_instead_of_waiting():
    """gamma = 128/262144 (a 262144 x 128 layer): delta ~ 1e4, where mpmath's start values for U would take minutes.
    Inside a fit mpmath runs under FIT_MPMATH_LIMITS: kappa and its CI (moment laws, no evaluation of the law) are
    reported, the goodness of fit is NaN rather than awaited."""
    import mpmath as mp

    from hmu_diag.htmp._kummer import FIT_MPMATH_LIMITS, mpmath_limits, u_mpmath

    gamma, kappa = 128 / 262144, 20.0
    a, s = kappa / 2, kappa / (2 * gamma)
    with mpmath_limits(*FIT_MPMATH_LIMITS), pytest.raises(mp.libmp.NoConvergence):
        u_mpmath(a, s - a, s)
    x = htmp.sample(128, gamma, kappa, rng=np.random.default_rng(4))
    f = htmp.fit(x, gamma, "direct", spikes=False)
    assert f.ok and f.kappa_lo <= kappa <= f.kappa_hi < math.inf
    assert math.isnan(f.D) and math.isnan(f.loglik) and math.isfinite(f.mp_D)


# --------------------------------------------------------------------------------------- batches of spectra


def _same(a, b) -> bool:
    """Field-by-field equality of two fit results, NaN equal to NaN (bit-identical numbers expected)."""
    from dataclasses import fields
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


def _mixed_batch():
    """Spectra that exercise every branch of the fit: log-moment and second-moment gammas, gamma = 1, spikes, an
    MP-like sample, an inverse-orientation sample, a huge dynamic range, and two that cannot be fitted."""
    rng = np.random.default_rng(5)
    spiked = np.concatenate([htmp.sample(300, 0.33, 2.0, 1.0, rng=1), [40.0, 55.0, 90.0]])
    return [
        (htmp.sample(16, 0.25, 1.0, 1.0, rng=2), 0.25),                      # n = 16: no Euler-Maclaurin part
        (htmp.sample(12, 0.5, 5.0, 1.0, rng=3), 0.5),                        # n < 16
        (spiked, 0.33),
        (htmp.sample(500, 0.1, np.inf, 2.0, rng=4), 0.1),                   # MP-like: kappa inf
        (htmp.sample(400, 0.5, 1.0, 1.0, rng=5, orientation="inverse"), 0.5),
        (htmp.sample(300, 0.97, 3.0, 1.0, rng=6), 0.97),                    # second-moment statistic
        (htmp.sample(200, 1.0, 2.0, 1.0, rng=7), 1.0),                      # square: gamma = 1
        (np.exp(rng.uniform(-300, 300, 100)), 0.4),                         # 600 decades
        (np.ones(50), 0.3),                                                 # all equal: failed
        (np.array([1.0, 2.0, 3.0]), 0.3),                                   # too few: failed
    ]


def test_fit_many_gives_each_spectrum_the_fit_it_gets_alone():
    batch = _mixed_batch()
    together = htmp_fit_many([e for e, _ in batch], [g for _, g in batch])
    for (evals, gamma), got in zip(batch, together):
        assert _same(got, fit(evals, gamma)), (gamma, got)
    assert [f.status.split(":")[0] for f in together[-2:]] == ["failed", "failed"]
    assert math.isinf(together[3].kappa) and together[2].n_spikes >= 3 and together[5].statistic == "second-moment"
    # a batch in another order gives the same results (no cross-talk between rows)
    reordered = htmp_fit_many([e for e, _ in batch[::-1]], [g for _, g in batch[::-1]])
    assert all(_same(a, b) for a, b in zip(together, reordered[::-1]))


def test_fit_many_rejects_mismatched_lengths_and_bad_gamma():
    x = htmp.sample(100, 0.5, 1.0, 1.0, rng=1)
    with pytest.raises(OptionError):
        htmp_fit_many([x, x], [0.5])
    with pytest.raises(OptionError):
        htmp_fit_many([x, x], [0.5, 1.5])


def test_batched_moment_tables_equal_one_pair_at_a_time():
    """The tables of g_n for many (gamma, n) pairs, computed together, equal each pair's own evaluation."""
    from hmu_diag.fits._kappa_law import _U_GRID, _log_stat_table_rows, _log_stat_tables
    pairs = [(0.25, 10), (0.25, 16), (0.25, 17), (0.5, 300), (0.9, 64), (0.04, 1000), (0.9, 20)]
    _log_stat_table_rows.cache_clear()
    g, sd = _log_stat_tables(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    for row, (gamma, n) in enumerate(pairs):
        mean, var = log_stat_moments(np.exp(_U_GRID), gamma, n)
        np.testing.assert_array_equal(g[row], mean)
        np.testing.assert_array_equal(sd[row], np.sqrt(var))


def test_quantile_table_for_many_laws_equals_one_law_at_a_time():
    from hmu_diag.htmp import _quantile_table
    x = np.geomspace(0.05, 8.0, 40)
    laws = [(0.3, 1.0), (0.5, 0.02), (1.0, 3.0), (0.99, 1.0), (0.3, 500.0), (0.1, 7.5)]
    F, Q, ok = _quantile_table.cdf_sf_many(np.tile(x, (len(laws), 1)), [g for g, _ in laws], [k for _, k in laws])
    for (gamma, kappa), f, q, answered in zip(laws, F, Q, ok):
        alone = _quantile_table.cdf_sf(x, gamma, kappa)
        assert answered == (alone is not None)
        if answered:
            np.testing.assert_array_equal(f, alone[0])
            np.testing.assert_array_equal(q, alone[1])
            assert np.max(np.abs(f - htmp.cdf(x, gamma, kappa))) < FIT_CDF_ATOL      # the exact evaluator
    assert not ok[3] and not ok[4]                       # outside the table: gamma in (0.952, 1), kappa >= 200
