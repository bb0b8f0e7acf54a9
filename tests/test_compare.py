"""Layer-by-layer model comparison (hmu_diag.compare, hmu-diag compare).

References: the per-layer tables of hmu_diag.analyze for each model separately (deltas and z recomputed from them),
identical weights (every delta exactly 0) and planted heavy-tailed layers (Pareto entries, tail index 1.5, whose
ESD has alpha ~ 1 + mu/2, far below a random layer's).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from hmu_diag.cli import main
from hmu_diag.compare import compare, verdict_counts
from hmu_diag.errors import HmuDiagError
from hmu_diag.pipeline import analyze


def pareto_like(shape, seed):
    gen = np.random.default_rng(seed)
    w = gen.pareto(1.5, size=shape) * gen.choice([-1, 1], size=shape)
    return torch.tensor(w / np.sqrt(shape[1]), dtype=torch.float32)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(40, 80), torch.nn.Linear(80, 60), torch.nn.Linear(60, 30))
    b = torch.nn.Sequential(torch.nn.Linear(40, 80), torch.nn.Linear(80, 60), torch.nn.Linear(60, 35),
                            torch.nn.Linear(35, 10))
    b[0].load_state_dict(a[0].state_dict())                   # identical layer
    b[1].weight.data = pareto_like((60, 80), 1)               # heavy-tailed: better than A's random layer
    return a, b


def test_compare_aligns_layers_and_judges_them(pair):
    a, b = pair
    out = compare(a, b)
    by_layer = out.set_index("layer")
    assert by_layer.loc["0", "match"] == "matched" and by_layer.loc["1", "match"] == "matched"
    assert by_layer.loc["2", "match"] == "shape differs" and by_layer.loc["3", "match"] == "only in B"
    assert (by_layer.loc["2", "shape_a"], by_layer.loc["2", "shape_b"]) == ("30x60", "35x60")
    # identical weights: every delta is exactly zero and the verdict is "same"
    deltas = [c for c in out.columns if c.startswith("delta_")]
    assert {"delta_alpha", "delta_log_norm", "delta_alpha_weighted"} <= set(deltas)
    assert (by_layer.loc["0", deltas].dropna() == 0).all() and by_layer.loc["0", "verdict"] == "same"
    # recompute z from the two per-layer tables
    ta = analyze(a).set_index("layer")
    tb = analyze(b).set_index("layer")
    z = (tb.loc["1", "alpha"] - ta.loc["1", "alpha"]) / np.hypot(ta.loc["1", "sigma"], tb.loc["1", "sigma"])
    assert by_layer.loc["1", "alpha_z"] == pytest.approx(z)
    assert z < -2 and by_layer.loc["1", "verdict"] == "better"
    # HTMP: the heavy-tailed layer's kappa interval lies entirely below the random layer's
    assert tb.loc["1", "htmp_kappa_hi"] < ta.loc["1", "htmp_kappa_lo"]
    assert by_layer.loc["1", "verdict_kappa"] == "better" and by_layer.loc["0", "verdict_kappa"] == "same"
    assert by_layer.loc["1", "delta_alpha"] == pytest.approx(tb.loc["1", "alpha"] - ta.loc["1", "alpha"])
    # matched rows first, most different first; unmatched have no verdict
    assert list(out["layer"][:2]) == ["1", "0"]
    assert set(out.loc[out["match"] != "matched", "verdict"]) == {"n/a"}
    counts = verdict_counts(out)
    assert counts["better"] == 1 and counts["same"] == 1
    assert set(out.loc[out["match"] == "shape differs", "layer"]) == {"2", "2.bias"}
    assert set(out.loc[out["match"] == "only in B", "layer"]) == {"3", "3.bias"}     # skipped rows align too
    assert counts["n/a"] == 2                                                         # the two matched biases
    # swapping the roles flips the verdict
    assert compare(b, a).set_index("layer").loc["1", "verdict"] == "worse"


def _kappa_table(kappa, lo, hi, alpha, sigma, model):
    return pd.DataFrame({"model": model, "layer": ["x", "y", "z"], "shape": "10x5", "status": "ok",
                         "alpha": alpha, "sigma": sigma, "htmp_kappa": kappa, "htmp_kappa_lo": lo, "htmp_kappa_hi": hi})


def test_kappa_intervals_and_conflicts():
    a = _kappa_table([5.0, 5.0, 5.0], [4.0, 4.0, 4.0], [6.0, 6.0, 6.0], [3.0, 3.0, 3.0], [0.1, 0.1, 0.1], "a")
    # x: kappa CIs overlap, alpha same -> same; y: kappa clearly smaller and alpha same -> better (from kappa? no:
    # alpha decides when it exists); z: alpha much lower but kappa clearly larger -> unclear
    b = _kappa_table([5.5, 2.0, 9.0], [4.5, 1.5, 8.0], [6.5, 2.5, 10.0], [3.0, 3.05, 2.0], [0.1, 0.1, 0.1], "b")
    out = compare(a, b).set_index("layer")
    assert out.loc["x", ["verdict_alpha", "verdict_kappa", "verdict"]].tolist() == ["same", "same", "same"]
    assert out.loc["y", ["verdict_alpha", "verdict_kappa", "verdict"]].tolist() == ["same", "better", "same"]
    assert out.loc["z", ["verdict_alpha", "verdict_kappa", "verdict"]].tolist() == ["better", "worse", "unclear"]
    no_alpha = compare(a.assign(alpha=np.nan), b.assign(alpha=np.nan)).set_index("layer")
    assert no_alpha.loc["y", "verdict"] == "better" and no_alpha.loc["z", "verdict"] == "worse"


def test_multi_model_tables_need_a_choice():
    a = _kappa_table([5.0] * 3, [4.0] * 3, [6.0] * 3, [3.0] * 3, [0.1] * 3, "a")
    both = pd.concat([a, a.assign(model="a2")])
    with pytest.raises(HmuDiagError, match="holds 2 models"):
        compare(both, a)
    with pytest.raises(HmuDiagError, match="no model 'zz'"):
        compare(both, a, model_a="zz")
    assert (compare(both, a, model_a="a2")["verdict"] == "same").all()


def test_cli_compare(pair, tmp_path, capsys, monkeypatch):
    import hmu_diag.cli as cli_module
    monkeypatch.setattr(cli_module, "COMMANDS", tuple(dict.fromkeys(cli_module.COMMANDS + ("compare",))))
    paths = []
    for name, model in zip("ab", pair):
        paths.append(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[-1]))
    out = tmp_path / "cmp"
    assert main(["compare", str(paths[0]), str(paths[1]), "-o", str(out), "--no-htmp"]) == 0
    text = capsys.readouterr().out
    assert "better: 1" in text and "only in B" in text and "shape differs" in text
    table = pd.read_csv(out / "compare.csv")
    assert table.loc[table["layer"].astype(str) == "1", "verdict"].item() == "better"
    assert main(["compare", str(paths[0]), str(tmp_path / "missing.pt"), "-o", str(out), "--no-htmp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
