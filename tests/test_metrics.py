"""Per-layer metrics against direct numpy formulas on the matrix itself (independent of the ESD code path)."""
import math

import numpy as np
import pytest

from hmu_diag.metrics import alpha_metrics, esd_row, norm_metrics, training_warning


@pytest.fixture
def matrix():
    rng = np.random.default_rng(0)
    return rng.standard_t(3, size=(400, 200))


def test_norm_metrics_match_matrix_norms(matrix):
    evals = np.sort(np.linalg.eigvalsh(matrix.T @ matrix))
    m = norm_metrics(evals)
    fro2 = np.linalg.norm(matrix, "fro") ** 2
    spec2 = np.linalg.norm(matrix, 2) ** 2
    assert m["log_norm"] == pytest.approx(math.log10(fro2), rel=1e-12)
    assert m["log_spectral_norm"] == pytest.approx(math.log10(spec2), rel=1e-12)
    assert m["stable_rank"] == pytest.approx(fro2 / spec2, rel=1e-10)
    p = evals / evals.sum()
    assert m["entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(200), rel=1e-12)


def test_entropy_extremes():
    assert norm_metrics(np.ones(50))["entropy"] == pytest.approx(1.0)  # flat spectrum: maximal entropy
    assert math.isnan(norm_metrics(np.array([0.0, 0.0, 3.0]))["entropy"])  # rank one: undefined, not a number


def test_alpha_metrics_definitions():
    evals = np.array([0.5, 1.0, 2.0, 4.0])
    m = alpha_metrics(2.5, evals, 4.0)
    assert m["alpha_weighted"] == pytest.approx(2.5 * math.log10(4.0))
    assert m["log_alpha_norm"] == pytest.approx(math.log10(np.sum(evals ** 2.5)))
    assert all(math.isnan(v) for v in alpha_metrics(math.nan, evals, 4.0).values())


def test_warning_labels():
    assert training_warning(7.0) == "under-trained"
    assert training_warning(1.5) == "over-trained"
    assert training_warning(3.0) == ""
    assert training_warning(math.nan) == ""


def test_esd_row_of_a_pareto_spectrum_recovers_alpha():
    rng = np.random.default_rng(1)
    evals = (1 - rng.random(3000)) ** (-1 / 1.5)  # Pareto with density exponent alpha = 2.5
    row = esd_row(evals, N=6000, M=3000, htmp=False)
    assert row["fit_status"] == "ok"
    assert abs(row["alpha"] - 2.5) < 4 * row["sigma"] + 0.05
    assert row["Q"] == 2 and row["gamma"] == 0.5 and row["num_evals"] == 3000 and row["rank_loss"] == 0


def test_esd_row_counts_zeros_and_never_fits_them():
    evals = np.concatenate([np.zeros(20), np.linspace(1, 5, 80)])
    row = esd_row(evals, N=100, M=100, zero_tol=1e-9, htmp=False)
    assert row["rank_loss"] == 20 and row["num_evals"] == 100
    assert row["xmin"] >= 1.0


def test_htmp_columns_of_a_batch_equal_each_spectrum_alone_and_a_bad_one_fails_alone():
    from hmu_diag import htmp
    from hmu_diag.htmp_metrics import htmp_metrics, htmp_metrics_many
    spectra = [(htmp.sample(200, g, k, 1.0, rng=i), g) for i, (g, k) in enumerate([(0.25, 1.0), (0.5, 8.0),
                                                                                   (0.97, 2.0), (0.1, np.inf)])]
    spectra.insert(2, (np.linspace(1.0, 2.0, 50), 1.7))          # gamma > 1: invalid, its row alone fails
    rows = htmp_metrics_many([e for e, _ in spectra], [g for _, g in spectra], alphas=[3.0] * 5)
    for (evals, gamma), row in zip(spectra, rows):
        alone = htmp_metrics(evals, gamma, alpha=3.0)
        assert row.keys() == alone.keys()
        for key in row:
            assert row[key] == alone[key] or (row[key] != row[key] and alone[key] != alone[key]), key
    assert rows[2]["htmp_status"].startswith("failed: OptionError") and rows[2]["phase"] == "undetermined"
    assert all(rows[i]["htmp_status"] == "ok" for i in (0, 1, 3, 4))
