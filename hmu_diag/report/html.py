"""One self-contained HTML report (inline CSS, PNG figures embedded as base64 ``data:`` URIs, no external assets).

:func:`write_report` takes the per-layer table of :func:`hmu_diag.analyze` or the :class:`~hmu_diag.rank.RankResult`
of :func:`hmu_diag.rank` and writes ``OUTDIR/report.html`` plus the CSV tables.  Layer reports show, per model, the
summary and warnings in plain words, α and κ by depth, the layer table, and one ESD figure per analysed layer when
eigenvalues are available (``spectra=`` or recomputed from ``source=``).  Rank reports show the ranking, the
correlation statistics and one metric-vs-accuracy scatter plot per metric.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import __version__
from ..rank import DEFAULT_SCORE, METRICS, OVERALL, RankResult
from . import plots
from .tables import write_tables

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}h3{margin-top:1.2em}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em;margin:.4em 0}
.note{color:#666;font-size:.85em}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #eee;padding:4px}figcaption{font-size:.75em;color:#444;max-width:360px}
.scroll{overflow-x:auto}
"""

LAYER_COLUMNS = ["layer", "kind", "shape", "status", "alpha", "sigma", "alpha_random", "alpha_excess", "D",
                 "num_pl_spikes", "log_spectral_norm", "alpha_weighted", "htmp_kappa", "htmp_kappa_lo",
                 "htmp_kappa_hi", "phase", "warning"]
RANK_COLUMNS = ["rank", "score", "accuracy", "family", "alpha", "alpha_excess", "frac_random_like",
                "log_spectral_norm", "log_alpha_norm", "htmp_kappa", "n_ok", "n_skipped", "n_failed"]


def _img(png: bytes, alt: str, **data: str) -> str:
    attrs = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in data.items())
    return (f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
            f'alt="{html.escape(alt)}"{attrs}>')


def _table(frame: pd.DataFrame, columns: list[str] | None = None, *, index: bool = False) -> str:
    if columns is not None:
        frame = frame[[c for c in columns if c in frame]]
    body = frame.to_html(index=index, escape=True, na_rep="", border=0,
                         float_format=lambda v: f"{v:.4g}" if math.isfinite(v) else str(v))
    return f'<div class="scroll">{body}</div>'


def _list(items: list[str], css: str = "") -> str:
    if not items:
        return ""
    cls = f' class="{css}"' if css else ""
    return "<ul>" + "".join(f"<li{cls}>{html.escape(i)}</li>" for i in items) + "</ul>"


def _names(frame: pd.DataFrame, limit: int = 8) -> str:
    names = [str(n) for n in frame["layer"]]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plain_summary(layers: pd.DataFrame) -> list[str]:
    """What one model's per-layer table says, in plain sentences."""
    status = layers["status"].astype(str)
    ok = layers[status.eq("ok")]
    skipped = layers[status.str.startswith("skipped")]
    failed = layers[status.str.startswith("failed")]
    lines = [f"{len(ok)} weight matrices analysed, {len(skipped)} skipped, {len(failed)} whose power-law fit failed."]
    if len(skipped):
        reasons = skipped["status"].str.replace("skipped: ", "", regex=False).value_counts()
        lines.append("Skipped: " + "; ".join(f"{r} ({n})" for r, n in reasons.items()) + ".")
    if len(failed):
        lines.append(f"Failed fits: {_names(failed)} — their α is missing and they are left out of the averages.")
    alpha = pd.to_numeric(ok.get("alpha", pd.Series(dtype=float)), errors="coerce")
    if alpha.notna().any():
        typical = alpha.between(2, 6).sum()
        lines.append(f"Mean power-law exponent α = {alpha.mean():.2f} (median {alpha.median():.2f}); {typical} of "
                     f"{alpha.notna().sum()} layers lie in the range 2–6 typical of well-trained layers.")
        high, low = ok[alpha > 6], ok[alpha < 2]
        if len(high):
            lines.append(f"α > 6 (light tail, little learned correlation; WeightWatcher calls this 'under-trained'): "
                         f"{_names(high)}.")
        if len(low):
            lines.append(f"α < 2 (very heavy tail; WeightWatcher calls this 'over-trained'): {_names(low)}.")
    if "random_like" in ok:
        random_like = ok[ok["random_like"].fillna(False).astype(bool)]
        if len(random_like):
            lines.append(f"{len(random_like)} layer(s) have an α inside the range a random Gaussian matrix of the same "
                         f"shape gives (they look untrained): {_names(random_like)}.")
        else:
            lines.append("Every fitted layer's α is outside the range of a random matrix of the same shape.")
    if "htmp_kappa" in ok:
        kappa = pd.to_numeric(ok["htmp_kappa"], errors="coerce")
        mp_like = ok[np.isinf(kappa)]
        finite = kappa[np.isfinite(kappa)]
        if finite.size:
            lines.append(f"HTMP repulsion κ: median {finite.median():.3g} over {finite.size} layers (smaller κ = heavier "
                         f"tail); {len(mp_like)} layer(s) are indistinguishable from Marchenko-Pastur (κ = ∞).")
    if "phase" in ok:
        phases = ok["phase"].fillna("unknown").value_counts()
        lines.append("Phases: " + ", ".join(f"{p} ({n})" for p, n in phases.items()) + ".")
    if "rank_loss" in ok:
        lossy = ok[pd.to_numeric(ok["rank_loss"], errors="coerce") > 0]
        if len(lossy):
            lines.append(f"Numerically rank-deficient matrices (zero eigenvalues left out of the fits): {_names(lossy)}.")
    return lines


def _spectrum_values(spectrum: Any) -> np.ndarray:
    values = getattr(spectrum, "evals", spectrum)
    return np.asarray(values, dtype=float)


def _esd_gallery(layers: pd.DataFrame, spectra: Mapping[tuple[str, str], Any]) -> str:
    figures = []
    for _, row in layers.iterrows():
        key = (str(row["model"]), str(row["layer"]))
        if key not in spectra:
            continue
        evals = _spectrum_values(spectra[key])
        png, notes = plots.esd_figure(evals, row, title=f"{row['layer']}  ({row.get('shape', '')})")
        caption = [f"{row['layer']}: {row.get('view', row.get('shape', ''))}"]
        if isinstance(row.get("alpha"), float) and math.isfinite(row["alpha"]):
            caption.append(f"α = {row['alpha']:.2f} ± {row.get('sigma', math.nan):.2f}, x_min = {row['xmin']:.3g}, "
                           f"tail {int(row['num_pl_spikes'])} of {evals.size} eigenvalues, KS D = {row['D']:.3f}")
        else:
            caption.append(f"power-law fit: {row['status']}")
        caption += notes
        image = _img(png, f"ESD of {row['layer']}", layer=row["layer"], model=row["model"])
        figures.append(f"<figure>{image}<figcaption>{'<br>'.join(html.escape(c) for c in caption)}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>' if figures else ""


def _layers_body(layers: pd.DataFrame, spectra: Mapping[tuple[str, str], Any] | None) -> str:
    from ..summary import summarize
    parts = []
    for model, group in layers.groupby("model", sort=False):
        parts.append(f"<h2>Model {html.escape(str(model))}</h2>")
        parts.append("<h3>In plain words</h3>" + _list(plain_summary(group)))
        parts.append("<h3>Summary</h3>" + _table(summarize(group).reset_index()))
        if group["status"].astype(str).eq("ok").any():
            parts.append("<h3>α and κ by depth</h3>" + _img(plots.depth_figure(group, title=str(model)),
                                                             f"alpha by depth for {model}", kind="depth"))
            if "alpha_random" in group:
                parts.append('<p class="note">Shaded band: the central 90% of α for random Gaussian matrices of the '
                             'same shapes under the same estimator. Green band: 2 ≤ α ≤ 6.</p>')
        parts.append("<h3>Layers</h3>" + _table(group, LAYER_COLUMNS))
        if spectra:
            gallery = _esd_gallery(group, spectra)
            if gallery:
                parts.append("<h3>Spectra (ESD of WᵀW, log-log)</h3>"
                             '<p class="note">Grey: histogram density of the eigenvalues on log bins. Red: the fitted '
                             'power law from x_min (dotted) on, scaled to its share of the eigenvalues. Blue: '
                             'Marchenko-Pastur fit (random-matrix bulk). Green: HTMP fit.</p>' + gallery)
    return "".join(parts)


def _rank_body(result: RankResult) -> str:
    models = result.models
    parts = ["<h2>Ranking</h2>",
             f"<p>Score = mean <b>{DEFAULT_SCORE}</b> over each model's weight matrices (α·log10 λ_max, Martin, Peng "
             "&amp; Mahoney 2021); <b>lower = predicted better</b>, rank 1 = best. The score is fixed in advance and "
             "never tuned on accuracies.</p>"]
    scored = models[models["score"].notna()]
    if len(scored):
        lines = [f"Predicted best: {scored.index[0]} (score {scored['score'].iloc[0]:.3f}); predicted worst: "
                 f"{scored.index[-1]} (score {scored['score'].iloc[-1]:.3f})."]
        parts.append(_list(lines))
    parts.append(_table(models.reset_index(), ["model"] + RANK_COLUMNS))
    if not result.correlations.empty:
        corr = result.correlations
        parts.append("<h2>How well each metric ranks the models</h2>"
                     "<p>Kendall τ and Spearman ρ between each metric and accuracy, signed so that <b>positive = the "
                     "metric orders the models in its expected direction</b> (τ_adj = direction × τ); R² and RMSE of the "
                     "least-squares line accuracy ≈ a + b·metric (the protocol of Martin, Peng &amp; Mahoney 2021). "
                     "Metrics without a fixed direction show raw τ only.</p>")
        if not result.best.empty:
            best = [f"{row['family']}: {row['metric']} (τ_adj {row['tau_adj']:.2f}, ρ_adj {row['rho_adj']:.2f}, "
                    f"n = {row['n']})" for _, row in result.best.iterrows()]
            parts.append("<p>Best-ranking metric per family:</p>" + _list(best))
        pivot = corr.pivot_table(index="metric", columns="family", values="tau_adj", sort=False)
        pivot.columns.name = None
        parts.append("<h3>τ_adj by family</h3>" + _table(pivot.reset_index()))
        parts.append("<h3>All statistics</h3>" + _table(corr))
        overall = corr[corr["family"].eq(OVERALL)].set_index("metric")
        figures = []
        for metric in [m for m in overall.index if METRICS.get(m, (0,))[0] != 0][:12]:
            row = overall.loc[metric]
            line = f"τ={row['tau']:.2f}  ρ={row['rho']:.2f}  R²={row['r2']:.2f}  (n={row['n']})"
            image = _img(plots.scatter_figure(models, metric, stats_line=line), f"{metric} vs accuracy", metric=metric)
            figures.append(f"<figure>{image}<figcaption>{html.escape(METRICS[metric][1])}</figcaption></figure>")
        parts.append('<h3>Metric vs accuracy</h3><div class="gallery">' + "".join(figures) + "</div>")
    if result.layers["status"].astype(str).eq("ok").any():
        parts.append("<h2>α by depth, all models</h2>" + _img(plots.depth_figure(result.layers), "alpha by depth",
                                                                kind="depth"))
    return "".join(parts)


def render_html(obj: pd.DataFrame | RankResult, *, title: str,
                spectra: Mapping[tuple[str, str], Any] | None = None, tables: list[str] = ()) -> str:
    """The report page as a string (see :func:`write_report`)."""
    warnings = list(obj.warnings) if isinstance(obj, RankResult) else []
    body = _rank_body(obj) if isinstance(obj, RankResult) else _layers_body(obj, spectra)
    links = " ".join(f'<a href="{html.escape(t)}">{html.escape(t)}</a>' for t in tables)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    warn_html = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warnings)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"note\">hmu-diag {__version__}, {stamp}. Tables: {links}</p>"
            f"{warn_html}{body}</body></html>\n")


def write_report(obj: pd.DataFrame | RankResult, outdir: str | Path, *, title: str = "hmu-diag report",
                 spectra: Mapping[tuple[str, str], Any] | None = None, source: Any = None,
                 **analyze_options: Any) -> Path:
    """Write ``OUTDIR/report.html`` (one self-contained file) and the CSV tables; return the HTML path.

    Parameters
    ----------
    obj : the per-layer table of :func:`hmu_diag.analyze`, or a :class:`~hmu_diag.rank.RankResult`.
    outdir : output folder (created).
    title : page title.
    spectra : eigenvalues per (model, layer): a ``Spectrum`` or an array; one ESD figure per layer found here.
    source : alternatively, the checkpoint the table came from; its spectra are recomputed with
        :func:`hmu_diag.pipeline.compute_spectra` and ``analyze_options`` (use the options of the analysis).
    """
    if spectra is None and source is not None and not isinstance(obj, RankResult):
        from ..pipeline import compute_spectra
        spectra = compute_spectra(source, **analyze_options)
    outdir = Path(outdir)
    tables = write_tables(obj, outdir)
    page = render_html(obj, title=title, spectra=spectra, tables=[p.name for p in tables])
    path = outdir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
