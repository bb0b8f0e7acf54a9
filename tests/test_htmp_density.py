"""HTMP density/CDF/Stieltjes/moments against independent references.

References: the mpmath-computed test vectors of research note htmp.md Sec. 3.8 (30-digit mpmath), direct mpmath
evaluation of Tricomi's U (``mpmath.hyperu`` on -t), scipy.integrate.quad of the density, closed-form moments and
tail constants (htmp.md Sec. 3.3, 3.6) and the Marchenko-Pastur closed form.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate

from hmu_diag import htmp
from hmu_diag.errors import HmuDiagError, OptionError
from hmu_diag.htmp import _phasegrid, _table

# ---- htmp.md Sec. 3.8 test vectors (scale 1) ------------------------------------------------------------------
PDF_X = [0.01, 0.1, 0.5, 1.0, 2.0, 5.0]
PDF_VECTORS = {
    (0.5, 1.0): [3.581928062, 1.104767591, 0.4386835668, 0.2621809023, 0.123167255, 0.01269204054],
    (0.3255, 1.9): [0.1692223942, 0.7425697228, 0.6293459848, 0.4109735713, 0.167056378, 9.970891381e-4],
    (0.3255, 5.5): [3.466657333e-5, 0.2522784758, 0.7084077209, 0.4848300928, 0.1915658622, 6.973424484e-7],
    (0.25, 0.2): [5.338643704, 1.112586952, 0.3457822117, 0.1897864266, 0.088113021, 0.01716973955],
}
# (F(0.5), F(1), F(2)), (S(0.5), S(2)), E[log x], Var
OTHER_VECTORS = {
    (0.5, 1.0): ([0.484828542, 0.6532016575, 0.8350670482], [1.050270552, 0.3732155328], -1.144729886, 1.5),
    (0.3255, 1.9): ([0.343547599, 0.5991024851, 0.8746769323], [0.8650187707, 0.3547523079], -0.4055164083, 0.668132),
    (0.3255, 5.5): ([0.2808325818, 0.5762207486, 0.9042005339], [0.8043216264, 0.3485625145], -0.2573271292, 0.443864),
    (0.25, 0.2): ([0.5817852855, 0.7085366123, 0.8378835602], [1.197354841, 0.3897230394], -2.074911039, 2.75),
}


def mp_logpdf(x: float, gamma: float, kappa: float) -> float:
    """Reference log density at scale 1: direct mpmath evaluation of Eq. (E.5) with mpmath.hyperu on -t."""
    with mp.workdps(30):
        a = mp.mpf(kappa) / 2
        s = mp.mpf(kappa) / (2 * mp.mpf(gamma))
        d = s - a
        t = s * mp.mpf(x)
        u = mp.hyperu(a, 1 - d, -t, maxterms=10 ** 6, maxprec=20000)
        return float(mp.log(s) + (d - 1) * mp.log(t) - t - mp.loggamma(a + 1) - mp.loggamma(s) - 2 * mp.log(abs(u)))


def quad_pdf(f, gamma, kappa, lo, hi, scale=1.0, orientation="direct", split=None):
    """Adaptive quadrature (scipy.integrate.quad_vec, Gauss-Kronrod 21) of f(x) pdf(x) over [lo, hi]; f may return a
    vector (several moments in one pass).  The range is split at a few points so that peaked densities are
    resolved, and a piece starting at 0 is integrated in u = log x from u = -700 (the density has an integrable
    x^(delta-1) singularity at 0; the mass below e^-700 is negligible for the delta used here)."""
    c = scale if split is None else split
    edges = sorted({lo, hi, *[p for p in (0.25 * c, 0.5 * c, c, 2 * c, 4 * c) if lo < p < hi]})
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        if a == 0.0:
            def g(u):
                x = math.exp(u)
                return np.asarray(f(x)) * htmp.pdf(x, gamma, kappa, scale, orientation) * x
            top = math.log(b)
            breaks = [top - w for w in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0) if top - w > -700.0]
            val, _ = integrate.quad_vec(g, -700.0, top, epsabs=1e-14, epsrel=1e-12, limit=400, points=breaks)
        else:
            val, _ = integrate.quad_vec(lambda x: np.asarray(f(x)) * htmp.pdf(x, gamma, kappa, scale, orientation),
                                        a, b, epsabs=1e-14, epsrel=1e-12, limit=400)
        total = total + val
    return total


# ---- test vectors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(PDF_VECTORS))
def test_pdf_matches_research_test_vectors(key):
    np.testing.assert_allclose(htmp.pdf(PDF_X, *key), PDF_VECTORS[key], rtol=1e-8)


@pytest.mark.parametrize("key", list(OTHER_VECTORS))
def test_cdf_stieltjes_moments_match_research_test_vectors(key):
    gamma, kappa = key
    cdf_ref, s_ref, elog_ref, var_ref = OTHER_VECTORS[key]
    np.testing.assert_allclose(htmp.cdf([0.5, 1.0, 2.0], gamma, kappa), cdf_ref, rtol=1e-8)
    np.testing.assert_allclose(htmp.stieltjes([0.5, 2.0], gamma, kappa), s_ref, rtol=1e-8)
    # E[log x] by quadrature of the density (the vector itself came from mpmath), and the closed form
    elog = quad_pdf(np.log, gamma, kappa, 0.0, 60.0)
    assert elog == pytest.approx(elog_ref, rel=1e-8)
    p = htmp.params(gamma, kappa)
    closed = (2 / kappa) * (math.lgamma(p["s"]) - math.lgamma(p["delta"])) - math.log(p["s"])
    assert closed == pytest.approx(elog_ref, rel=1e-8)
    assert htmp.var(gamma, kappa) == pytest.approx(var_ref, rel=1e-6)   # vector given to 6 digits


# ---- normalisation, mean, variance by quadrature ---------------------------------------------------------------
@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.5, 2.0), (0.25, 0.7), (0.1, 20.0), (0.9, 3.0),
                                         (0.05, 5.0), (0.5, 50.0)])
def test_integrates_to_one_with_mean_scale_and_variance(gamma, kappa):
    scale = 2.5
    hi = scale * (1 + 40 * math.sqrt(gamma * (1 + 2 / kappa)))
    mass, mean, m2 = quad_pdf(lambda x: [1.0, x, x * x], gamma, kappa, 0.0, hi, scale)
    assert mass == pytest.approx(1.0, abs=1e-8)
    assert mean == pytest.approx(scale, rel=1e-8)
    assert m2 - mean ** 2 == pytest.approx(scale ** 2 * gamma * (1 + 2 / kappa), rel=1e-7)


# ---- agreement with direct mpmath evaluation ------------------------------------------------------------------
def _points(gamma, kappa):
    sd = math.sqrt(gamma * (1 + 2 / kappa))
    return [max(0.02, 1 + c * sd) for c in (-1.5, -0.6, 0.0, 0.7, 1.6, 3.0)]


FAST_GRID = [(0.1, 1.0), (0.33, 5.5), (0.5, 0.3), (0.9, 20.0), (0.33, 100.0), (0.5, 2.0), (0.1, 20.0)]


@pytest.mark.parametrize("gamma,kappa", FAST_GRID)
def test_logpdf_matches_mpmath(gamma, kappa):
    x = _points(gamma, kappa)[::2]
    ref = [mp_logpdf(xi, gamma, kappa) for xi in x]
    np.testing.assert_allclose(htmp.logpdf(x, gamma, kappa), ref, rtol=0, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [0.1, 0.33, 0.5, 0.9])
@pytest.mark.parametrize("kappa", [0.3, 1.0, 2.0, 5.5, 20.0, 100.0])
def test_logpdf_matches_mpmath_dense_grid(gamma, kappa):
    x = _points(gamma, kappa)
    ref = [mp_logpdf(xi, gamma, kappa) for xi in x]
    np.testing.assert_allclose(htmp.logpdf(x, gamma, kappa), ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("gamma,kappa,x", [
    (0.5, 2.0, [0.3, 1.0, 2.2]),        # delta = 1 (integer: connection formula singular)
    (0.5, 20.0, [0.5, 1.0, 1.6]),       # delta = 10
    (0.2, 12.0, [0.5, 1.0]),            # delta = 24, research note values 0.8465180, 0.6640161
    (0.1, 100.0, [0.6, 1.0, 1.5]),      # delta = 450 (hyp1f1 overflows)
    (1.0, 3.0, [0.01, 0.5, 2.0]),       # gamma = 1: delta = 0, log singularity at 0
])
def test_integer_and_large_delta_match_mpmath(gamma, kappa, x):
    ref = [mp_logpdf(xi, gamma, kappa) for xi in x]
    np.testing.assert_allclose(htmp.logpdf(x, gamma, kappa), ref, rtol=0, atol=1e-8)


def test_research_note_fallback_values():
    assert htmp.pdf(1.0, 0.5, 2.0) == pytest.approx(0.3224841, abs=1e-7)
    np.testing.assert_allclose(htmp.pdf([0.5, 1.0], 0.2, 12.0), [0.8465180, 0.6640161], atol=1e-7)


# ---- CDF ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma,kappa", [(0.3255, 1.9), (0.5, 2.0), (0.1, 5.5), (0.9, 3.0), (0.33, 100.0),
                                         (0.05, 5.0)])
def test_cdf_matches_quadrature_of_pdf(gamma, kappa):
    sd = math.sqrt(gamma * (1 + 2 / kappa))
    x = np.array([max(0.01, 1 + c * sd) for c in (-1.0, 0.0, 1.0, 2.5)])
    ref = np.cumsum([quad_pdf(lambda u: 1.0, gamma, kappa, lo, hi) for lo, hi in zip([0.0, *x[:-1]], x)])
    f = htmp.cdf(x, gamma, kappa)
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(f + htmp.sf(x, gamma, kappa), 1.0, atol=1e-12)


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.25, 0.2), (0.1, 20.3), (0.9, 7.0)])
def test_fast_phase_grid_agrees_with_ode_table(gamma, kappa):
    """Two independent CDF engines: the unwrapped connection-formula phase vs the phase-amplitude ODE."""
    p = htmp.params(gamma, kappa)
    x = np.geomspace(0.05, 6.0, 300)
    t = p["s"] * x
    fast = _phasegrid.phase(gamma, kappa, t)
    assert fast is not None
    table = _table.phase_table(gamma, kappa)
    inside = np.log(t) <= table.tau_hi
    ode = table.state(np.log(t[inside]))[2]
    np.testing.assert_allclose(fast[inside] / (np.pi * p["a"]), ode / (np.pi * p["a"]), atol=1e-9)


def test_cdf_is_monotone_with_correct_limits():
    x = np.concatenate([[0.0, 1e-300], np.geomspace(1e-12, 50, 2000), [np.inf]])
    for gamma, kappa in [(0.5, 0.3), (0.3255, 5.5), (0.5, 4.0)]:
        f = htmp.cdf(x, gamma, kappa)
        assert f[0] == 0.0 and f[-1] == 1.0
        assert np.all(np.diff(f) >= -1e-14)
        assert f[-2] > 0.9999


# ---- scale law, orientation, tails -------------------------------------------------------------------------------
def test_scale_law():
    x = np.array([0.1, 0.7, 1.3, 4.0])
    for scale in (0.01, 3.0):
        np.testing.assert_allclose(htmp.pdf(x, 0.3255, 1.9, scale=scale),
                                   htmp.pdf(x / scale, 0.3255, 1.9) / scale, rtol=1e-12)
        np.testing.assert_allclose(htmp.cdf(x, 0.3255, 1.9, scale=scale), htmp.cdf(x / scale, 0.3255, 1.9),
                                   atol=1e-14)


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.5, 1.0), (0.25, 3.0)])
def test_inverse_orientation_normalised_and_consistent(gamma, kappa):
    scale = 1.7
    mass = quad_pdf(lambda x: 1.0, gamma, kappa, 0.0, 1e3, scale, "inverse", split=1 / scale)
    tail = htmp.sf(1e3, gamma, kappa, scale, "inverse")
    assert mass + tail == pytest.approx(1.0, abs=1e-8)
    mu = np.array([0.3, 0.8, 2.0])
    np.testing.assert_allclose(htmp.pdf(mu, gamma, kappa, scale, "inverse"),
                               htmp.pdf(1 / mu, gamma, kappa, scale) / mu ** 2, rtol=1e-12)
    np.testing.assert_allclose(htmp.cdf(mu, gamma, kappa, scale, "inverse"), htmp.sf(1 / mu, gamma, kappa, scale),
                               atol=1e-14)
    d = htmp.params(gamma, kappa)["delta"]
    if d > 1:
        m1 = quad_pdf(lambda x: x, gamma, kappa, 0.0, 1e4, scale, "inverse", split=1 / scale)
        assert htmp.mean(gamma, kappa, scale, "inverse") == pytest.approx(m1, rel=1e-6)


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 1.9), (0.5, 3.0), (0.25, 0.2)])
def test_inverse_upper_tail_slope_and_lower_tail_constant(gamma, kappa):
    p = htmp.params(gamma, kappa)
    a, s, d = p["a"], p["s"], p["delta"]
    mu = np.array([1e40, 1e41])       # corrections are O(mu^-delta) relative
    slope = np.diff(htmp.logpdf(mu, gamma, kappa, orientation="inverse")) / np.diff(np.log(mu))
    assert slope[0] == pytest.approx(-(1 + d), abs=1e-5)
    # rho(x) ~ C0 x^(delta-1), C0 = theta^delta Gamma(s) / (Gamma(1+a) Gamma(delta)^2) (htmp.md Sec. 3.6)
    log_c0 = d * math.log(s) + math.lgamma(s) - math.lgamma(1 + a) - 2 * math.lgamma(d)
    x = 1e-60
    assert float(htmp.logpdf(x, gamma, kappa)) == pytest.approx(log_c0 + (d - 1) * math.log(x), abs=1e-6)


def test_marchenko_pastur_limit():
    gamma = 0.5
    lo, hi = htmp.mp_edges(gamma)
    x = np.linspace(lo, hi, 400)
    gaps = [np.abs(htmp.cdf(x, gamma, k) - htmp.mp_cdf(x, gamma)).max() for k in (5.3, 50.3, 150.3)]
    assert gaps[0] > gaps[1] > gaps[2] > 0
    # measured sup|F_HTMP - F_MP| ~ 0.45/kappa (the basis of KAPPA_MP)
    assert gaps[1] == pytest.approx(0.45 / 50.3, rel=0.2) and gaps[2] == pytest.approx(0.45 / 150.3, rel=0.2)
    np.testing.assert_array_equal(htmp.cdf(x, gamma, htmp.KAPPA_MP), htmp.mp_cdf(x, gamma))
    np.testing.assert_allclose(htmp.pdf(x, gamma, np.inf), htmp.mp_pdf(x, gamma), rtol=1e-13)
    np.testing.assert_array_equal(htmp.cdf(x, gamma, np.inf, scale=2.0), htmp.mp_cdf(x, gamma, 2.0))


# ---- Stieltjes and moments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.5, 2.0), (0.2, 12.0)])
def test_stieltjes_matches_quadrature(gamma, kappa):
    scale = 1.5
    z = np.array([0.05, 1.0, 20.0])
    ref = quad_pdf(lambda x: np.concatenate([1 / (x + z), 1 / (1 / x + z)]), gamma, kappa, 0.0, 80.0, scale)
    np.testing.assert_allclose(htmp.stieltjes(z, gamma, kappa, scale), ref[:3], rtol=1e-8)
    np.testing.assert_allclose(htmp.stieltjes(z, gamma, kappa, scale, "inverse"), ref[3:], rtol=1e-8)  # mu = 1/x


def test_stieltjes_mp_limit_matches_quadrature():
    lo, hi = htmp.mp_edges(0.4, 2.0)
    for z in (0.1, 3.0):
        ref, _ = integrate.quad(lambda x: htmp.mp_pdf(x, 0.4, 2.0) / (x + z), lo, hi, epsabs=1e-13)
        assert htmp.stieltjes(z, 0.4, np.inf, 2.0) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("gamma,kappa", [(0.3255, 5.5), (0.2, 12.0)])
def test_moments_recursion_matches_quadrature(gamma, kappa):
    scale = 0.7
    ks = [2, 3, 4, -1, -2]
    got = htmp.moments(ks, gamma, kappa, scale)
    ref = quad_pdf(lambda x: [x ** k for k in ks], gamma, kappa, 1e-12, 60.0, scale)   # mass below 1e-12: < 1e-50
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    assert htmp.moments(-3, 0.5, 1.0) == math.inf     # delta = 0.5: E[1/lambda^3] diverges
    np.testing.assert_allclose(htmp.moments([1, 2, 3], 0.3, np.inf, 2.0),
                               [htmp.mp_moment(k, 0.3, 2.0) for k in (1, 2, 3)])
    assert htmp.moments(2, gamma, kappa, scale, "inverse") == pytest.approx(htmp.moments(-2, gamma, kappa, scale))


# ---- argument handling -------------------------------------------------------------------------------------------
def test_edges_and_scalars():
    assert htmp.pdf(0.0, 0.5, 1.0) == 0.0 and htmp.pdf(-1.0, 0.5, 1.0) == 0.0
    assert htmp.cdf(-1.0, 0.5, 1.0) == 0.0 and htmp.cdf(np.inf, 0.5, 1.0) == 1.0
    assert htmp.sf(0.0, 0.5, 1.0) == 1.0
    assert htmp.cdf(np.inf, 0.5, 1.0, orientation="inverse") == 1.0
    assert htmp.cdf(0.0, 0.5, 1.0, orientation="inverse") == 0.0
    assert isinstance(htmp.pdf(1.0, 0.5, 1.0), float)
    assert htmp.pdf(np.ones((2, 3)), 0.5, 1.0).shape == (2, 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(gamma=1.5, kappa=1.0), "gamma must be in"),
    (dict(gamma=0.0, kappa=1.0), "gamma must be in"),
    (dict(gamma=0.5, kappa=0.0), "kappa must be > 0"),
    (dict(gamma=0.5, kappa=float("nan")), "kappa must be > 0"),
    (dict(gamma=0.5, kappa=1.0, scale=-1.0), "scale must be finite and > 0"),
    (dict(gamma=0.5, kappa=1.0, orientation="sideways"), "orientation must be"),
])
def test_bad_arguments_raise_one_line_errors(kwargs, match):
    with pytest.raises(OptionError, match=match) as info:
        htmp.pdf(1.0, **kwargs)
    assert "\n" not in str(info.value) and str(info.value).startswith("htmp.logpdf")
    with pytest.raises(HmuDiagError, match="NaN"):
        htmp.cdf([1.0, float("nan")], 0.5, 1.0)
    with pytest.raises(HmuDiagError, match="z must be > 0"):
        htmp.stieltjes(-1.0, 0.5, 1.0)


@pytest.mark.parametrize("gamma", [0.05, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("kappa", [3.3, 10.7, 47.1, 150.3])
def test_phase_branch_from_mp_equals_the_grid_phase(gamma, kappa):
    """The CDF's phase unwrapped with the Marchenko-Pastur CDF equals the adaptively-gridded phase, and the bound it
    rests on, sup |F_HTMP - F_MP| <= 0.48/kappa (branch error <= 0.24 pi, rounding safe below pi), holds."""
    from hmu_diag.htmp._kummer import fast_applicable
    from hmu_diag.htmp.mp import mp_cdf

    a, d = kappa / 2, kappa / (2 * gamma) - kappa / 2
    if not fast_applicable(d):
        pytest.skip("delta near an integer: the ODE path serves it")
    t = (a + d) * np.geomspace(1e-3, 8, 300)
    grid = _phasegrid._phase_one(a, d, t)
    branch = _phasegrid._phase_mp_branch(gamma, a, d, t)[0]
    if grid is None:              # the fast path fails somewhere on the grid: the ODE phase is the reference
        grid = _table.phase_table(gamma, kappa).state(np.log(t))[2]
        if branch is None:
            pytest.skip("the fast path is inaccurate at these points: the ODE path serves them")
    assert branch is not None
    np.testing.assert_allclose(branch, grid, rtol=0, atol=1e-8 * a)
    assert np.max(np.abs(grid / (np.pi * a) - mp_cdf(t / (a + d), gamma, 1.0))) * kappa <= 0.5


@pytest.mark.parametrize("gamma,delta", [(1 / 6, 1.02), (0.3, 1.0), (0.5, 2.97), (1 / 6, 6.0), (0.25, 13.0),
                                         (0.781, 1.96)])
def test_fit_mode_cdf_across_an_integer_delta(gamma, delta):
    """Outside the quantile table, fit mode interpolates F and 1 - F in delta across a near-integer delta (no ODE, no
    mpmath): within FIT_CDF_ATOL of the exact CDF (the ODE path), measured < 5e-5 (at delta ~ 1)."""
    from hmu_diag.htmp._accuracy import FIT_CDF_ATOL
    from hmu_diag.htmp.density import _cdf_sf_across_integer

    kappa = 2 * gamma * delta / (1 - gamma)
    x = np.geomspace(0.02, 6.0, 120)
    exact_f, exact_q = htmp.cdf(x, gamma, kappa), htmp.sf(x, gamma, kappa)
    f, q = _cdf_sf_across_integer(x, gamma, delta)
    np.testing.assert_allclose(f, exact_f, rtol=0, atol=FIT_CDF_ATOL)
    np.testing.assert_allclose(q, exact_q, rtol=0, atol=FIT_CDF_ATOL)
    assert np.all(np.diff(f) >= -1e-9) and np.all((0 <= f) & (f <= 1))


@pytest.mark.parametrize("a", [1e-3, 0.25, 1.0, 5.0, 50.0, 100.0])
def test_square_start_values_match_mpmath(a):
    """gamma = 1 (delta = 0): the ODE starts from the logarithmic series of U(a, 1, -t), not from mpmath; its
    log|U| and Re t d/dt log U agree with mpmath.hyperu (U' = -a U(a+1, 2, .)) to 1e-13."""
    for t in (1e-6, 0.25 / max(a, 1.0)):
        with mp.workdps(40):
            u = mp.hyperu(a, 1, -mp.mpf(t))
            ref_log = float(mp.log(abs(u)))
            ref_rate = float(mp.re(mp.mpf(t) * a * mp.hyperu(a + 1, 2, -mp.mpf(t)) / u))
        log_u, rate = _table._initial_state_square(a, t)
        assert log_u == pytest.approx(ref_log, rel=1e-13, abs=1e-13)
        assert rate == pytest.approx(ref_rate, rel=1e-12)


@pytest.mark.parametrize("kappa", [0.5, 3.0, 40.0])
def test_square_cdf_matches_the_mpmath_phase(kappa):
    """gamma = 1: F = arg U(a, 1, -t - i0)/(pi a) from mpmath where the phase is below pi (no branch to choose).
    Quadrature of the density is no reference here: F ~ 1/|log t| near 0 puts mass below any quadrature start."""
    a = s = kappa / 2
    x = np.array([1e-6, 1e-3, 0.05, 0.3, 0.6])
    f = htmp.cdf(x, 1.0, kappa)
    keep = f < 1.0 / a                                    # phase pi a F below pi
    assert keep.sum() >= 1
    with mp.workdps(30):
        ref = [float(abs(mp.arg(mp.hyperu(a, 1, -mp.mpf(s * xi)))) / (mp.pi * a)) for xi in x[keep]]
    np.testing.assert_allclose(f[keep], ref, rtol=0, atol=1e-9)


def test_quantile_table_matches_the_exact_cdf_off_the_nodes():
    """Fit mode reads F and 1 - F from tabulated quantiles (hmu_diag.htmp._quantile_table): at random parameters
    between the nodes (gamma in [0.02, 0.95] and gamma = 1, kappa in [0.01, 199]) within FIT_CDF_ATOL of the exact
    CDF, over the whole body of the law; the upper tail 1 - F keeps its relative accuracy."""
    from hmu_diag.htmp import _quantile_table
    from hmu_diag.htmp._accuracy import FIT_CDF_ATOL, fit_mode

    rng = np.random.default_rng(7)
    params_ = [(1 / (1 + 10 ** rng.uniform(-1.3, 1.7)), 10 ** rng.uniform(-2, 2.3)) for _ in range(10)]
    params_ += [(1.0, 10 ** rng.uniform(-2, 2.3)) for _ in range(4)] + [(0.33, 1.9), (0.5, 5.5), (1.0, 2.0)]
    for gamma, kappa in params_:
        sd = math.sqrt(gamma * (1 + 2 / kappa))
        x = np.concatenate([np.geomspace(1e-4, 0.5, 40), np.linspace(0.5, 1 + 6 * sd, 80)])
        table = _quantile_table.cdf_sf(x, gamma, kappa)
        if table is None:               # a stencil node that could not be built: the exact path serves
            continue
        f, q = table
        exact_f, exact_q = htmp.cdf(x, gamma, kappa), htmp.sf(x, gamma, kappa)
        np.testing.assert_allclose(f, exact_f, rtol=0, atol=FIT_CDF_ATOL, err_msg=f"gamma={gamma}, kappa={kappa}")
        tail = exact_q > 1e-6
        np.testing.assert_allclose(q[tail], exact_q[tail], rtol=0.05, err_msg=f"gamma={gamma}, kappa={kappa}")
        with fit_mode():
            assert np.array_equal(htmp.cdf(x, gamma, kappa), f)        # fit mode uses it
    assert _quantile_table.cdf_sf(np.ones(3), 0.97, 2.0) is None         # outside the table: the exact path serves
    assert _quantile_table.cdf_sf(np.ones(3), 0.3, 1e-3) is None


def test_tabulated_quantiles_invert_the_exact_cdf():
    """The spike thresholds of the HTMP fit read the 1 - alpha/n quantile straight from the table
    (_quantile_table.log_quantile_many): at random off-node parameters (and gamma = 1) the exact CDF at the returned
    point has the requested logit level, log(F/(1-F)) = z, to 1e-3 in the body and the far upper tail; outside the
    table (gamma in (0.952, 1), kappa < 0.01, |z| > 16) it answers NaN."""
    from hmu_diag.htmp import _quantile_table

    rng = np.random.default_rng(11)
    params_ = [(1 / (1 + 10 ** rng.uniform(-1.3, 1.7)), 10 ** rng.uniform(-2, 2.3)) for _ in range(8)]
    params_ += [(1.0, 10 ** rng.uniform(-2, 2.3)) for _ in range(3)] + [(0.33, 1.9), (0.1, 30.0)]
    z = np.array([-3.0, 0.0, 5.0, 11.5, 14.0])
    for gamma, kappa in params_:
        log_x = _quantile_table.log_quantile_many(z, np.full(z.size, gamma), np.full(z.size, kappa))
        if not np.isfinite(log_x).all():            # a stencil node that could not be built: the caller falls back
            continue
        x = np.exp(log_x)
        sf = htmp.sf(x, gamma, kappa)
        np.testing.assert_allclose(np.log1p(-sf) - np.log(sf), z, rtol=0, atol=1e-3,
                                   err_msg=f"gamma={gamma}, kappa={kappa}")
    outside = _quantile_table.log_quantile_many(np.array([0.0, 0.0, 17.0]), [0.97, 0.3, 0.3], [2.0, 1e-3, 2.0])
    assert np.isnan(outside).all()


def test_fast_path_sign_error_below_the_bulk_is_caught():
    """gamma = 10^-0.2, kappa = 10^1.8 (delta = 18.45): below the bulk both hyp1f1 evaluations of M(a, 1 - delta, -t)
    agree and are wrong, flipping the sign of Re U; the phase then sits pi from the MP reference, more than the
    0.24 pi the bound allows, so the ODE decides (it used to return F = 1/a = 0.0317 where F ~ 6e-14)."""
    gamma, kappa = 10 ** -0.2, 10 ** 1.8
    p = htmp.params(gamma, kappa)
    x = np.array([6.37e-3, 0.01, 0.05, 0.5, 1.0])
    ode = _table.phase_table(gamma, kappa).state(np.log(p["s"] * x))[2] / (np.pi * p["a"])
    np.testing.assert_allclose(htmp.cdf(x, gamma, kappa), ode, rtol=1e-6, atol=1e-12)
    assert htmp.cdf(6.37e-3, gamma, kappa) < 1e-12


@pytest.mark.parametrize("row,col", [(None, 25), (4, 12), (17, 30), (28, 40)])
def test_quantile_table_file_matches_its_builder(row, col):
    """The committed table is what ``make htmp-table`` builds: nodes recomputed from the exact law agree (float32)."""
    from hmu_diag.htmp import _quantile_table as qt

    gamma = 1.0 if row is None else 1.0 / (1.0 + 10.0 ** qt.V_GAMMA[row])
    stored = qt._table()[1][col] if row is None else qt._table()[0][row, col]
    rebuilt = qt._node_log_quantiles(gamma, 10.0 ** qt.LOG10_KAPPA[col])
    np.testing.assert_array_equal(np.isnan(stored), np.isnan(rebuilt))
    np.testing.assert_allclose(stored, rebuilt, rtol=0, atol=1e-5 * (1 + np.nanmax(np.abs(rebuilt))), equal_nan=True)
