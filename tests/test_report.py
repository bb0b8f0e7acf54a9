"""HTML reports (hmu_diag.report, hmu-diag report).

References: Python's html.parser (well-formedness), base64 + matplotlib's PNG reader (every figure decodes),
closed-form densities (power-law tail mass (1 - (x_max/x_min)^(1-alpha)) and the Marchenko-Pastur density written
out here), and headless Chromium (the page renders to a non-blank screenshot).
"""
from __future__ import annotations

import base64
import io
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from hmu_diag.baseline import add_random_baseline
from hmu_diag.cli import main
from hmu_diag.pipeline import analyze, compute_spectra
from hmu_diag.rank import rank
from hmu_diag.report import plain_summary, write_report
from hmu_diag.report.plots import density_curves

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """Collects <img> attributes and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value.startswith(("http:", "https:", "//")) or (tag in ("script", "link") and value):
                self.external.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    assert not page.external
    return page


def decode_png(src: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    raw = base64.b64decode(src[len(prefix):], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(raw), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 50
    return image


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 48),
                               torch.nn.Linear(48, 10), torch.nn.Linear(10, 4))   # last: 4 eigenvalues -> skipped


@pytest.fixture(scope="module")
def layer_report(tmp_path_factory):
    model = tiny_model()
    layers = add_random_baseline(analyze(model), n_draws=6)
    out = tmp_path_factory.mktemp("report")
    path = write_report(layers, out, title="tiny <model> & co", spectra=compute_spectra(model))
    return layers, path


def test_layer_report_is_self_contained_and_has_every_layer(layer_report):
    layers, path = layer_report
    page = parse(path)
    for image in page.images:
        decode_png(image["src"])
        assert image.get("alt")
    esd = [i["data-layer"] for i in page.images if "data-layer" in i]
    ok = layers.loc[layers["status"].eq("ok"), "layer"].tolist()
    assert sorted(esd) == sorted(ok) and len(ok) == 3
    assert any(i.get("data-kind") == "depth" for i in page.images)
    text = path.read_text()
    assert "tiny &lt;model&gt; &amp; co" in text                         # the title is escaped
    assert "fewer than 10 eigenvalues" in text or "skipped" in text
    written = pd.read_csv(path.parent / "layers.csv")
    assert written["layer"].astype(str).tolist() == layers["layer"].astype(str).tolist()


def test_plain_summary_names_problem_layers():
    table = pd.DataFrame({"model": "m", "layer": ["a", "b", "c", "d", "e"], "kind": "linear",
                          "status": ["ok", "ok", "ok", "failed: no tail", "skipped: 1-D tensor"],
                          "alpha": [1.5, 3.0, 9.0, np.nan, np.nan], "random_like": [False, False, True, pd.NA, pd.NA],
                          "rank_loss": [0, 2, 0, 0, 0]})
    lines = " ".join(plain_summary(table))
    assert "3 weight matrices analysed, 1 skipped, 1 whose power-law fit failed" in lines
    assert "α > 6" in lines and ": c." in lines
    assert "α < 2" in lines and ": a." in lines
    assert "look untrained): c" in lines
    assert "rank-deficient matrices (zero eigenvalues left out of the fits): b" in lines


def test_density_curves_match_closed_forms():
    rng = np.random.default_rng(0)
    evals = np.sort(rng.pareto(2.0, 400) + 0.5)
    alpha, xmin, xmax, n_tail = 2.7, 1.2, float(evals[-1]), int((evals >= 1.2).sum())
    gamma, scale = 0.5, 1.3
    row = {"alpha": alpha, "xmin": xmin, "xmax": xmax, "num_pl_spikes": n_tail, "gamma": gamma, "mp_scale": scale}
    curves, notes = density_curves(evals, row)
    (x_pl, p_pl), = [v for k, v in curves.items() if k.startswith("power law")]
    # mass of the drawn power law = tail share x (1 - (xmax/xmin)^(1-alpha))
    mass = np.trapezoid(p_pl, x_pl)
    expected = n_tail / evals.size * (1 - (xmax / xmin) ** (1 - alpha))
    assert (x_pl[0], x_pl[-1]) == pytest.approx((xmin, xmax)) and mass == pytest.approx(expected, rel=0.01)
    x_mp, p_mp = curves["Marchenko-Pastur"]
    lo, hi = scale * (1 - np.sqrt(gamma)) ** 2, scale * (1 + np.sqrt(gamma)) ** 2
    inside = (x_mp > lo) & (x_mp < hi)
    closed = np.sqrt((hi - x_mp[inside]) * (x_mp[inside] - lo)) / (2 * np.pi * gamma * scale * x_mp[inside])
    assert np.allclose(p_mp[inside], closed, rtol=1e-9)
    assert np.all(p_mp[~inside] == 0)
    # HTMP only when its parameters exist; kappa = inf is reported in words
    assert not any(k.startswith("HTMP") for k in curves) and not notes
    _, notes = density_curves(evals, {**row, "htmp_kappa": np.inf, "htmp_scale": 1.0})
    assert any("Marchenko-Pastur" in n for n in notes)


def test_fitted_densities_of_real_layers(layer_report):
    """Every layer with an MP / HTMP fit gets that curve; each is a finite density of mass <= 1 on the plotted range."""
    from hmu_diag.htmp.mp import mp_cdf
    layers, _ = layer_report
    spectra = compute_spectra(tiny_model())
    ok = layers[layers["status"].eq("ok")]
    assert ok["mp_scale"].notna().all()
    for _, row in ok.iterrows():
        evals = spectra[(row["model"], row["layer"])].evals
        curves, _ = density_curves(evals, row)
        x, p = curves["Marchenko-Pastur"]
        assert np.all(np.isfinite(p)) and np.trapezoid(p, x) <= 1.0 + 1e-6
        # the drawn MP mass on [x0, x1] equals the bulk share times the MP CDF difference (closed form)
        share = 1 - row["mp_num_spikes"] / evals[evals > 0].size
        want = share * (mp_cdf(x[-1], row["gamma"], row["mp_scale"]) - mp_cdf(x[0], row["gamma"], row["mp_scale"]))
        assert np.trapezoid(p, x) == pytest.approx(want, abs=0.03)
        if np.isfinite(row["htmp_kappa"]):
            (hx, hp), = [v for k, v in curves.items() if k.startswith("HTMP")]
            assert np.all(np.isfinite(hp)) and np.all(hp >= 0) and np.trapezoid(hp, hx) <= 1.0 + 1e-3


def test_htmp_curve_drawn_when_present():
    pytest.importorskip("hmu_diag.htmp.density")
    evals = np.linspace(0.05, 4.0, 200)
    curves, _ = density_curves(evals, {"gamma": 0.5, "htmp_kappa": 3.0, "htmp_scale": 1.0,
                                       "htmp_orientation": "direct"})
    (x, p), = [v for k, v in curves.items() if k.startswith("HTMP")]
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and p.max() > 0.05


@pytest.fixture(scope="module")
def rank_report(tmp_path_factory):
    tables = [analyze(tiny_model(seed), htmp=False).assign(model=f"m{seed}") for seed in range(4)]
    manifest = {f"m{seed}": acc for seed, acc in enumerate([0.7, 0.8, 0.75, 0.9])}
    result = rank(tables, manifest=manifest, baseline=False)
    out = tmp_path_factory.mktemp("rank")
    return result, write_report(result, out, title="ranking")


def test_rank_report_has_tables_scatter_plots_and_warnings(rank_report):
    result, path = rank_report
    page = parse(path)
    for image in page.images:
        decode_png(image["src"])
    metrics = {i["data-metric"] for i in page.images if "data-metric" in i}
    assert {"alpha_weighted", "alpha", "log_spectral_norm"} <= metrics
    assert {p.name for p in path.parent.iterdir()} >= {"report.html", "layers.csv", "ranking.csv", "correlations.csv"}
    ranking = pd.read_csv(path.parent / "ranking.csv", index_col="model")
    assert ranking["rank"].tolist() == result.models["rank"].tolist()
    text = path.read_text()
    assert "lower = predicted better" in text
    for warning in result.warnings:
        assert warning.split(":")[0].replace("'", "&#x27;") in text


def test_cli_report_from_checkpoint_and_from_table(tmp_path, capsys, monkeypatch):
    import hmu_diag.cli as cli_module
    from safetensors.torch import save_file
    monkeypatch.setattr(cli_module, "COMMANDS", tuple(dict.fromkeys(cli_module.COMMANDS + ("report",))))
    ckpt = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model().state_dict().items()}, str(ckpt))
    out = tmp_path / "r"
    assert main(["report", str(ckpt), "-o", str(out), "--no-htmp"]) == 0
    page = parse(out / "report.html")
    assert len([i for i in page.images if "data-layer" in i]) == 3
    table = pd.read_csv(out / "layers.csv")
    assert "alpha_random" in table
    assert main(["report", str(out / "layers.csv"), "-o", str(tmp_path / "t")]) == 0
    again = parse(tmp_path / "t" / "report.html")
    assert not [i for i in again.images if "data-layer" in i] and any(i.get("data-kind") for i in again.images)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(layer_report, tmp_path):
    _, path = layer_report
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,1600", f"--screenshot={shot}", path.resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1600, 1200)
    grey = image[..., :3].mean(axis=2)
    assert grey.std() > 0.05                 # not a blank page: text, tables and figures are drawn
    assert (grey < 0.5).mean() > 0.01        # dark pixels: text and plot lines
