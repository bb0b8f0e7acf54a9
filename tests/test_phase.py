"""5+1 phase rules (hmu_diag.fits.phase) on constructed spectra, and the per-layer columns (hmu_diag.htmp_metrics).

Constructed spectra: dense eigenvalues of Gaussian matrices (MP), with planted separated spikes (Bulk+Spikes) or a
few eigenvalues just past the edge (Bleeding-out); HTMP samples at gamma = 0.3255 with Fig. 2's kappa = 5.5
(Bulk-decay), 1.9 (Heavy-tailed) and 1e-3 (Rank-collapse) (Hodgkinson, Wang & Mahoney 2025, Fig. 2).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmu_diag import htmp
from hmu_diag.fits.htmp import fit
from hmu_diag.fits.mp import fit_mp
from hmu_diag.fits.phase import PHASES, UNDETERMINED, classify_phase
from hmu_diag.fits.powerlaw import fit_power_law
from hmu_diag.htmp_metrics import COLUMNS, htmp_metrics, lower_tail_input

GAMMA = 0.3255          # MiniAlexNet FC1, 1000 x 3072 (Fig. 2)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _white(m=400, n=1229, seed=0):
    w = np.random.default_rng(seed).standard_normal((m, n)) / math.sqrt(n)
    return np.linalg.eigvalsh(w @ w.T)


def _phase(ev, gamma=GAMMA, **kw):
    return classify_phase(ev, fit_mp(ev, gamma), fit(ev, gamma), **kw)


def test_random_like():
    assert _phase(_white()) == "random-like"


def test_bulk_plus_spikes():
    ev = _white()
    edge = (1 + math.sqrt(GAMMA)) ** 2
    ev[-3:] = edge * np.array([1.8, 2.5, 4.0])          # well separated outliers
    assert _phase(ev) == "bulk+spikes"


def test_bleeding_out():
    ev = np.sort(_white())
    edge = (1 + math.sqrt(GAMMA)) ** 2
    ev[-8:] = edge * np.linspace(1.02, 1.08, 8)          # several eigenvalues leaking just past the MP edge
    assert _phase(ev) == "bleeding-out"


@pytest.mark.parametrize("kappa,phase", [(5.5, "bulk-decay"), (1.9, "heavy-tailed"), (1e-3, "rank-collapse")])
def test_htmp_phases_of_fig2(kappa, phase):
    ev = htmp.sample(1000, GAMMA, kappa, 1.0, rng=7)
    assert _phase(ev) == phase


@pytest.mark.parametrize("kappa,phase,tiny", [(0.05, "heavy-tailed", (0.0, 0.05)), (1e-3, "rank-collapse", (0.5, 1.0))])
def test_rank_collapse_needs_a_small_gamma_shape_delta(kappa, phase, tiny):
    # kappa -> 0 is rank collapse because the law tends to i.i.d. Gamma(shape delta), delta = kappa (1-gamma)/(2 gamma)
    # -> 0.  In a wide layer (gamma = 0.04, e.g. a depthwise conv) kappa = 0.05 still leaves delta = 0.6: no pile-up
    # at zero (about 1% of the eigenvalues below 1e-3 of the mean, against 86% at kappa = 1e-3), a heavy-tailed, not
    # a collapsed, spectrum - although the fit is sure that kappa < 0.1 in both cases
    gamma = 0.04
    ev = htmp.sample(1000, gamma, kappa, 1.0, rng=7)
    assert fit(ev, gamma).kappa_hi < 0.1
    assert tiny[0] <= np.mean(ev < 1e-3 * ev.mean()) <= tiny[1]
    assert _phase(ev, gamma) == phase


def test_rank_loss_means_rank_collapse():
    ev = _white()
    assert _phase(ev, rank_loss=100) == "rank-collapse"      # 100 of 500 eigenvalues were zero
    assert _phase(ev, rank_loss=10) == "random-like"


def test_rank_one_and_dead_layers_are_rank_collapse_even_though_no_fit_exists():
    from hmu_diag import analyze

    rng = np.random.default_rng(0)
    layers = {"rank1.weight": torch.from_numpy(np.outer(rng.standard_normal(40), rng.standard_normal(30))),
              "dead.weight": torch.zeros(40, 30)}
    df = analyze(layers).set_index("layer")
    assert df.loc["rank1", "rank_loss"] == 29 and df.loc["dead", "rank_loss"] == 30
    assert df.loc["rank1", "phase"] == df.loc["dead", "phase"] == "rank-collapse"
    ev = np.array([1.0, 2.0])                        # too few values for any fit, none zero: still undetermined
    assert classify_phase(ev, fit_mp(ev, 0.5), fit(ev, 0.5)) == UNDETERMINED


def test_inverse_orientation_uses_predicted_alpha():
    ev = htmp.sample(1000, GAMMA, 1.9, 1.0, rng=3, orientation="inverse")   # upper tail alpha = 1 + delta = 2.97
    ht = fit(ev, GAMMA)
    assert ht.orientation == "inverse"
    assert classify_phase(ev, fit_mp(ev, GAMMA), ht) == "heavy-tailed"
    assert classify_phase(ev, fit_mp(ev, GAMMA), ht, alpha_heavy=2.5) == "bulk-decay"


def test_failed_fits_are_undetermined():
    ev = [1.0, 2.0]
    assert classify_phase(ev, fit_mp(ev, 0.5), fit(ev, 0.5)) == UNDETERMINED
    assert set(PHASES) == {"random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
                           "rank-collapse"}


def test_htmp_metrics_columns_and_values():
    ev = htmp.sample(1000, GAMMA, 1.9, 2.0, rng=5)
    row = htmp_metrics(ev, GAMMA, alpha=3.2)
    assert tuple(row) == COLUMNS
    f = fit(ev, GAMMA)
    assert row["htmp_kappa"] == f.kappa and row["htmp_orientation"] == f.orientation == "direct"
    assert row["htmp_pred_alpha"] == pytest.approx(1 + f.delta)
    assert row["alpha_minus_pred"] == pytest.approx(3.2 - row["htmp_pred_alpha"])
    assert row["mp_num_spikes"] == fit_mp(ev, GAMMA).num_spikes and row["phase"] == "heavy-tailed"
    assert row["htmp_status"] == "ok"
    # measured lower tail: rho ~ lambda^(delta-1) near 0 <=> 1/lambda has upper-tail exponent 1 + delta (~3.1);
    # finite-size CSN fits underestimate it (htmp.md sec. 3.6), so only the ballpark is checked
    assert 1.8 < row["lower_alpha"] < 3.6 and 0 < row["lower_D"] < 0.1


def test_lower_tail_is_fitted_within_the_smaller_half_of_the_eigenvalues():
    """Unrestricted, the CSN fit of 1/lambda takes most of this spectrum as its "tail"; restricted, x_min lies in the
    smaller half, and the result is the plain fit of 1/lambda of the ceil(n/2) smallest eigenvalues, in any order."""
    ev = htmp.sample(1001, 0.5, 0.5, 1.0, rng=0)
    assert fit_power_law(np.sort(1.0 / ev)).n_tail > 600                       # the case the restriction is for
    row = htmp_metrics(np.random.default_rng(1).permutation(ev), 0.5)
    ref = fit_power_law(1.0 / np.sort(ev)[:501])
    assert row["lower_alpha"] == ref.alpha and row["lower_D"] == ref.D
    assert lower_tail_input(ev).size == 501 and lower_tail_input(ev[:12]).size == 10
    assert lower_tail_input(ev[:9]) is None


def test_lower_alpha_on_a_known_power_law():
    """lambda = 1/x with x Pareto(alpha = 2.5): the power-law exponent of 1/lambda is 2.5 (independent of HTMP)."""
    rng = np.random.default_rng(4)
    x = (1.0 - rng.random(3000)) ** (-1.0 / 1.5)       # density ~ x^-2.5 on [1, inf)
    row = htmp_metrics(1.0 / x, 0.5, alpha=math.nan)
    assert row["lower_alpha"] == pytest.approx(2.5, abs=0.15)
    assert math.isnan(row["alpha_minus_pred"])


@pytest.mark.parametrize("bad, phase", [([], UNDETERMINED), ([1.0] * 50, UNDETERMINED), ([np.nan] * 20, UNDETERMINED),
                                        ([0.0] * 30, "rank-collapse"), ([-1.0, 2.0], "rank-collapse"),
                                        ("abc", UNDETERMINED), (None, UNDETERMINED)])
def test_htmp_metrics_degenerate_inputs(bad, phase):
    row = htmp_metrics(bad, 0.5, alpha=2.0)        # zero (or negative) values are rank loss, no fit needed
    assert tuple(row) == COLUMNS and row["phase"] == phase and math.isnan(row["htmp_kappa"])
    assert row["htmp_status"].startswith("failed: ")        # with its reason, never a silent NaN row


def test_htmp_status_names_the_reason():
    assert htmp_metrics([1.0, 2.0, 3.0], 0.5)["htmp_status"] == "failed: fewer than 10 positive eigenvalues (3)"
    assert htmp_metrics([2.0] * 40, 0.5)["htmp_status"] == "failed: all eigenvalues equal"
    assert htmp_metrics("abc", 0.5)["htmp_status"].startswith("failed: ValueError: could not convert")
    assert htmp_metrics(np.arange(1.0, 100.0), 1.5)["htmp_status"].startswith("failed: OptionError: ")


@pytest.mark.parametrize("gamma", [0.0, 1.5, float("nan"), None])
def test_htmp_metrics_bad_gamma(gamma):
    row = htmp_metrics(np.arange(1.0, 100.0), gamma, alpha=2.0)
    assert row["phase"] == UNDETERMINED and row["htmp_orientation"] == ""


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)), min_size=0, max_size=60),
       st.floats(0.05, 1.0))
def test_htmp_metrics_never_raises(values, gamma):
    row = htmp_metrics(np.array(values, dtype=float), gamma, alpha=2.0)
    assert tuple(row) == COLUMNS and (row["phase"] in PHASES or row["phase"] == UNDETERMINED)
