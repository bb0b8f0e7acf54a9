"""Model ranking (hmu_diag.rank, hmu-diag rank).

References: the published per-model WeightWatcher summaries of Martin, Peng & Mahoney (Nat. Commun. 2021) whose
Table 1 gives tau / R^2 / RMSE; scikit-learn's OLS and a brute-force pair count for Kendall tau; means recomputed
from the per-layer table of hmu_diag.analyze.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_squared_error, r2_score

from hmu_diag.cli import main
from hmu_diag.errors import HmuDiagError
from hmu_diag.pipeline import analyze
from hmu_diag.rank import (DEFAULT_SCORE, best_metrics, correlation_stats, metric_correlations, model_metrics, rank,
                           read_manifest)

# Data from github.com/CalculatedContent/ww-trends-2020 data/vgg*.txt (WeightWatcher 0.2.7 model summaries:
# lognorm, logspectralnorm, alpha_weighted, logpnorm, alpha) and the torchvision top-1 errors used in its
# ModelPlots.ipynb.  NC 2021 Table 1 (VGG row): tau -0.79/-0.93/-0.93/-0.93, R^2 .88/.98/.92/.96,
# RMSE .56/.23/.48/.34; unweighted mean alpha tau +0.86 (htsr_literature A1, A5).
VGG = pd.DataFrame({
    "model": ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"],
    "log_norm": [1.2524171, 1.1951782, 1.173613, 1.103328, 1.151898, 1.0838087, 1.1347398, 1.0527282],
    "log_spectral_norm": [1.3775396, 1.2294753, 1.2381203, 1.1064705, 1.1342309, 0.99559957, 1.0506858, 0.9023008],
    "alpha_weighted": [3.4185709160575564, 3.2905576857216485, 3.320007348861324, 3.204392943307246,
                       3.2378687378699915, 3.0457785359331933, 3.0502896626924687, 2.773897310565011],
    "log_alpha_norm": [3.878202196567239, 3.737638416364605, 3.7377252970354227, 3.575211144744146,
                       3.6369831875409977, 3.4336214092533757, 3.466012124686101, 3.20578986771568],
    "alpha": [2.5724931679398506, 2.7469659989886512, 2.6896964617417645, 2.953077245208803,
              2.8923380789518722, 3.0990855629263008, 2.9646727164819735, 3.079582210985024],
    "accuracy": 100 - np.array([30.98, 29.62, 30.07, 28.45, 28.41, 26.63, 27.62, 25.76]),
}).set_index("model")


def test_reproduces_nature_communications_table1_vgg_row():
    corr = metric_correlations(VGG).set_index("metric")
    assert (corr["family"] == "(all)").all()
    published = {"log_norm": (-0.79, 0.88, 0.56), "log_spectral_norm": (-0.93, 0.98, 0.23),
                 "alpha_weighted": (-0.93, 0.92, 0.48), "log_alpha_norm": (-0.93, 0.96, 0.34)}
    for metric, (tau, r2, rmse) in published.items():
        assert corr.loc[metric, "tau"] == pytest.approx(tau, abs=0.005)
        assert corr.loc[metric, "r2"] == pytest.approx(r2, abs=0.005)
        assert corr.loc[metric, "rmse"] == pytest.approx(rmse, abs=0.005)
        assert corr.loc[metric, "tau_adj"] == pytest.approx(-tau, abs=0.005)   # lower = better, so sign flips
    assert corr.loc["alpha", "tau"] == pytest.approx(0.86, abs=0.005)          # the wrong sign across depth (A5)
    assert corr.loc["alpha", "tau_adj"] < 0
    best = best_metrics(metric_correlations(VGG))
    assert best["tau_adj"].iloc[0] == pytest.approx(0.93, abs=0.005)
    assert best["metric"].iloc[0] in ("log_spectral_norm", "alpha_weighted", "log_alpha_norm")


def test_correlation_stats_against_independent_references():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = -0.7 * x + rng.normal(scale=0.5, size=12)
    got = correlation_stats(x, y, direction=-1)
    pairs = list(itertools.combinations(range(12), 2))
    concordant = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    assert got["tau"] == pytest.approx(concordant / len(pairs))
    ranks = lambda v: np.argsort(np.argsort(v))
    assert got["rho"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    fit = LinearRegression().fit(x[:, None], y)
    pred = fit.predict(x[:, None])
    assert got["r2"] == pytest.approx(r2_score(y, pred))
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)))
    assert got["tau_adj"] == pytest.approx(-got["tau"]) and got["n"] == 12
    # non-finite pairs are dropped; too few pairs or a constant metric give NaN, not numbers
    assert correlation_stats(np.r_[x, np.nan], np.r_[y, 1.0])["tau"] == pytest.approx(got["tau"])
    assert np.isnan(correlation_stats([1, 2], [2, 1])["tau"])
    assert np.isnan(correlation_stats([1, 1, 1], [1, 2, 3])["r2"])
    assert np.isnan(correlation_stats(x, y)["tau_adj"])                   # no direction: no adjusted value


def test_correlations_per_family():
    models = VGG.copy()
    models["family"] = ["plain", "bn"] * 4
    corr = metric_correlations(models)
    assert set(corr["family"]) == {"(all)", "plain", "bn"}
    plain = models[models["family"] == "plain"]
    row = corr[(corr["family"] == "plain") & (corr["metric"] == "alpha_weighted")].iloc[0]
    assert row["tau"] == pytest.approx(correlation_stats(plain["alpha_weighted"], plain["accuracy"])["tau"])
    assert row["n"] == 4


# ------------------------------------------------------------------------------------------ real models, analyze()

def mlp(widths, seed, scale=1.0, heavy=False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    if heavy:  # planted heavy tail: Pareto entries (tail index 1.5) give a power-law ESD
        gen = np.random.default_rng(seed)
        for layer in layers:
            w = gen.pareto(1.5, size=tuple(layer.weight.shape)) * gen.choice([-1, 1], size=tuple(layer.weight.shape))
            layer.weight.data = torch.tensor(w / np.sqrt(w.shape[1]), dtype=torch.float32)
    for layer in layers:
        layer.weight.data *= scale
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Four same-architecture MLP checkpoints: two random inits, two with planted heavy tails."""
    root = tmp_path_factory.mktemp("zoo")
    specs = {"rand_a": dict(seed=0), "rand_b": dict(seed=1, scale=2.0), "heavy_a": dict(seed=2, heavy=True),
             "heavy_b": dict(seed=3, heavy=True, scale=0.5)}
    for name, spec in specs.items():
        model = mlp((48, 96, 64, 40), **spec)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / f"{name}.safetensors"))
    return root


def test_rank_scores_are_model_means_of_alpha_weighted(zoo):
    result = rank(zoo, baseline_draws=6)
    layers = analyze(zoo)
    ok = layers[layers["status"].eq("ok")]
    expected = ok.groupby("model")["alpha_weighted"].mean()
    assert result.score_metric == DEFAULT_SCORE
    assert result.models["score"].to_dict() == pytest.approx(expected.to_dict())
    assert result.models["alpha"].to_dict() == pytest.approx(ok.groupby("model")["alpha"].mean().to_dict())
    assert result.models["htmp_kappa"].to_dict() == pytest.approx(ok.groupby("model")["htmp_kappa"].median().to_dict())
    phases = [c for c in result.models if c.startswith("frac_phase_")]
    assert phases and np.allclose(result.models[phases].sum(axis=1), 1.0)
    ordered = expected.sort_values()
    assert list(result.models.index) == list(ordered.index)
    assert list(result.models["rank"]) == [1, 2, 3, 4]
    # the baseline sees heavy-tailed layers as far below random; random inits as random-like
    heavy = result.models.loc[["heavy_a.safetensors", "heavy_b.safetensors"], "alpha_excess"]
    rand = result.models.loc[["rand_a.safetensors", "rand_b.safetensors"], "alpha_excess"]
    assert heavy.max() < rand.min()
    assert result.models.loc["rand_a.safetensors", "frac_random_like"] > 0.5
    assert not any("architectures" in w for w in result.warnings)
    # layers 0 (96x48) and 2 (40x64) have 48 and 40 eigenvalues: flagged in all four models
    assert any(w.startswith("8 of the 12 fitted layers have fewer than 50 eigenvalues (0, 2)") for w in result.warnings)
    assert "RankResult(4 models" in repr(result)


def test_manifest_changes_the_report_not_the_ranking(zoo, tmp_path):
    plain = rank(zoo, htmp=False, baseline=False)
    accuracies = {"rand_a": 0.50, "rand_b": 0.55, "heavy_a": 0.90, "heavy_b": 0.85}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(accuracies))                         # stems match "<stem>.safetensors"
    ranked = rank(zoo, manifest=manifest, htmp=False, baseline=False)
    pd.testing.assert_series_equal(plain.models["rank"], ranked.models["rank"])
    assert ranked.models["accuracy"].notna().all()
    corr = ranked.correlations.set_index("metric")
    assert corr.loc["alpha", "n"] == 4
    want = correlation_stats(ranked.models["alpha"], ranked.models["accuracy"], -1)
    assert corr.loc["alpha", "tau_adj"] == pytest.approx(want["tau_adj"])
    # heavy tails (small alpha) are the accurate ones: 4 of the 6 pairs are concordant whatever the within-pair order
    assert corr.loc["alpha", "tau_adj"] >= 1 / 3 - 1e-9
    assert not ranked.best.empty


def test_architecture_and_embedding_handling(tmp_path):
    small = analyze(mlp((30, 60, 20), 0), htmp=False).assign(model="small")
    big = analyze(mlp((30, 80, 20), 1), htmp=False).assign(model="big")
    emb = torch.nn.Sequential(torch.nn.Embedding(500, 24), *mlp((30, 60, 20), 0))
    with_emb = analyze(emb, htmp=False).assign(model="with_emb")
    third = analyze(mlp((30, 60, 20), 2), htmp=False).assign(model="third")
    result = rank([small, big, third, with_emb], baseline=False)
    assert any("span 2 different architectures" in w for w in result.warnings)
    # the embedding is left out of the means: with_emb scores exactly like 'small' (same weights otherwise)
    assert result.models.loc["with_emb", "score"] == pytest.approx(result.models.loc["small", "score"])
    assert result.models.loc["with_emb", "n_excluded"] == 1
    included = rank([small, with_emb], baseline=False, exclude_kinds=())
    assert included.models.loc["with_emb", "score"] != pytest.approx(included.models.loc["small", "score"])


def test_scale_collapse_and_unscored_warnings():
    def table(model, alphas, lmax):
        return pd.DataFrame({"model": model, "layer": ["a", "b"], "kind": "linear", "shape": ["10x5", "10x5"],
                             "status": "ok", "alpha": alphas, "alpha_weighted": np.array(alphas) * np.log10(lmax),
                             "warning": ""})
    # higher alpha but much smaller lambda_max: alpha_weighted and alpha disagree
    tables = [table("a", [2.0, 2.0], 100.0), table("b", [3.0, 3.0], 10.0), table("c", [4.0, 4.0], 2.0),
              table("d", [np.nan, np.nan], 5.0).assign(status="failed: no tail")]
    result = rank(tables, baseline=False)
    assert any("scale collapse" in w for w in result.warnings)
    assert any("not ranked: d" in w for w in result.warnings)
    assert list(result.models.index) == ["c", "b", "a", "d"] and np.isnan(result.models.loc["d", "rank"])


def test_htmp_and_phase_summaries_when_present():
    layers = pd.DataFrame({"model": ["m"] * 3, "layer": list("abc"), "kind": "linear", "shape": "10x5",
                           "status": "ok", "alpha": [2.0, 3.0, 4.0], "alpha_weighted": [1.0, 2.0, 3.0],
                           "warning": "", "htmp_kappa": [1.0, 100.0, np.inf], "htmp_kappa_lo": [0.5, 5, 50],
                           "phase": ["heavy-tailed", "heavy-tailed", "random-like"]})
    models = model_metrics(layers)
    assert models.loc["m", "htmp_kappa"] == pytest.approx(100.0)           # median: robust to kappa = inf
    assert models.loc["m", "htmp_log_kappa"] == pytest.approx(1.0)        # mean of log10 1 and log10 100
    assert models.loc["m", "frac_mp_like"] == pytest.approx(1 / 3)
    assert models.loc["m", "frac_phase_heavy-tailed"] == pytest.approx(2 / 3)
    assert "htmp_kappa_lo" not in models


def test_read_manifest_formats_and_errors(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,top1,family\na.pt,71.5,resnet\nb.pt,70.0,vgg\n")
    got = read_manifest(csv)
    assert got.to_dict("list") == {"key": ["a.pt", "b.pt"], "accuracy": [71.5, 70.0], "family": ["resnet", "vgg"]}
    records = tmp_path / "r.json"
    records.write_text(json.dumps({"models": [{"model": "a", "accuracy": 0.5}, {"model": "b", "accuracy": 0.7}]}))
    assert read_manifest(records)["accuracy"].tolist() == [0.5, 0.7]
    for bad, match in [("model,score\na,1\n", "accuracy column"), ("model,accuracy\na,high\n", "not a number"),
                       ("model,accuracy\na,1\na,2\n", "listed twice")]:
        path = tmp_path / "bad.csv"
        path.write_text(bad)
        with pytest.raises(HmuDiagError, match=match):
            read_manifest(path)
    with pytest.raises(HmuDiagError, match="not found"):
        read_manifest(tmp_path / "missing.json")


@pytest.fixture
def cli(monkeypatch):
    """``hmu-diag`` with the rank/compare/report commands registered (as in hmu_diag/cli/__init__.py)."""
    import hmu_diag.cli as cli_module
    commands = tuple(dict.fromkeys(cli_module.COMMANDS + ("rank", "compare", "report")))
    monkeypatch.setattr(cli_module, "COMMANDS", commands)
    return main


def test_cli_rank(zoo, tmp_path, capsys, cli):
    manifest = tmp_path / "m.csv"
    manifest.write_text("model,accuracy\nrand_a,0.5\nrand_b,0.55\nheavy_a,0.9\nheavy_b,0.85\nghost,0.1\n")
    out = tmp_path / "out"
    assert cli(["rank", str(zoo), "--manifest", str(manifest), "-o", str(out), "--no-htmp"]) == 0
    text = capsys.readouterr().out
    assert "lower = predicted better" in text and "match no model: ghost" in text
    ranking = pd.read_csv(out / "ranking.csv", index_col="model")
    assert ranking["rank"].tolist() == [1, 2, 3, 4] and "score" in ranking
    assert (out / "correlations.csv").is_file() and (out / "layers.csv").is_file()
    # a saved layer table ranks the same way without re-analysing
    assert cli(["rank", str(out / "layers.csv"), "-o", str(tmp_path / "again"), "--no-baseline"]) == 0
    again = pd.read_csv(tmp_path / "again" / "ranking.csv", index_col="model")
    assert again["score"].to_dict() == pytest.approx(ranking["score"].to_dict())
    capsys.readouterr()
    assert cli(["rank", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hmu-diag: error:") and "nope.safetensors" in err[0]


@pytest.mark.slow
def test_zoo_ranking_script_on_a_small_family(zoo, tmp_path):
    """reports/make_zoo_ranking.py ranks a family with hmu-diag and WeightWatcher 0.7.7 and writes the tables."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("make_zoo_ranking",
                                                  Path(__file__).parents[1] / "reports" / "make_zoo_ranking.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    family = tmp_path / "fam"
    family.mkdir()
    accuracies = {"rand_a": 0.50, "rand_b": 0.55, "heavy_a": 0.90, "heavy_b": 0.85}
    for name in accuracies:
        (family / f"{name}.safetensors").write_bytes((zoo / f"{name}.safetensors").read_bytes())
    manifest = {"format": "hmu-diag-zoo/1", "family": "fam", "description": "test family", "varied": ["x"],
                "models": [{"name": n, "file": f"{n}.safetensors", "heldout_accuracy": a} for n, a in accuracies.items()]}
    (family / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "zoo.md"
    assert script.main([str(family), "--out", str(out), "--no-htmp"]) == 0
    text = out.read_text()
    assert "| WeightWatcher 0.7.7 | alpha_weighted |" in text and "| hmu-diag | alpha_weighted |" in text
    stats = pd.read_csv(out.with_suffix(".csv"))
    ours = stats[(stats["tool"] == "hmu-diag") & (stats["metric"] == "alpha")].iloc[0]
    ranked = rank(family, manifest=family / "manifest.json", htmp=False, baseline=False)
    assert ours["tau"] == pytest.approx(correlation_stats(ranked.models["alpha"], ranked.models["accuracy"])["tau"])
