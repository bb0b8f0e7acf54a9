"""Figures of the HTML report, each returned as PNG bytes (matplotlib, Agg backend, no display needed).

* :func:`esd_figure` — one layer's ESD on log-log axes: log-binned histogram density of the eigenvalues, the fitted
  power law p(x) = f (α−1)/x_min (x/x_min)^(−α) on [x_min, x_max] (f = n_tail/n, the tail's share of the ESD), and
  the fitted Marchenko-Pastur and HTMP densities (:func:`hmu_diag.htmp.mp.mp_pdf`, :func:`hmu_diag.htmp.density.pdf`)
  when the layer's row has their parameters.
* :func:`depth_figure` — α (with the random-matrix baseline band) and HTMP κ against layer index.
* :func:`scatter_figure` — a model-level metric against accuracy, one colour per family, with the OLS line.
"""
from __future__ import annotations

import io
import math
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..errors import HmuDiagError  # noqa: E402

DPI = 80
_GRID = 160


def to_png(fig: plt.Figure) -> bytes:
    """Render and close a figure; PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _num(row: Mapping, key: str) -> float:
    try:
        value = float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan
    return value


def density_curves(evals: np.ndarray, row: Mapping) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """The fitted densities to overlay on an ESD, each as (x, density) on a log grid, and notes on missing ones.

    Densities are per eigenvalue of the whole ESD: the power law is scaled by its tail share n_tail/n, MP by its
    bulk share (n − spikes)/n.
    """
    x = np.sort(evals[evals > 0])
    notes: list[str] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if x.size < 2:
        return curves, ["fewer than 2 positive eigenvalues"]
    grid = np.geomspace(x[0], x[-1], _GRID)
    alpha, xmin, n_tail = _num(row, "alpha"), _num(row, "xmin"), _num(row, "num_pl_spikes")
    xmax = _num(row, "xmax")
    if math.isfinite(alpha) and math.isfinite(xmin) and alpha > 1 and xmin > 0:
        top = xmax if math.isfinite(xmax) else x[-1]
        g = np.geomspace(xmin, top, _GRID)
        share = n_tail / x.size if math.isfinite(n_tail) else 1.0
        curves[f"power law α={alpha:.2f}"] = (g, share * (alpha - 1) / xmin * (g / xmin) ** (-alpha))
    gamma = _num(row, "gamma")
    mp_scale = _num(row, "mp_scale")
    if math.isfinite(mp_scale) and 0 < gamma <= 1:
        from ..htmp.mp import mp_pdf
        spikes = _num(row, "mp_num_spikes")
        share = 1.0 - (spikes / x.size if math.isfinite(spikes) else 0.0)
        curves["Marchenko-Pastur"] = (grid, share * mp_pdf(grid, gamma, mp_scale))
    kappa, h_scale = _num(row, "htmp_kappa"), _num(row, "htmp_scale")
    if math.isfinite(kappa) and math.isfinite(h_scale) and 0 < gamma <= 1:
        from ..htmp.density import pdf
        orientation = str(row.get("htmp_orientation") or "direct")
        try:
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                density = pdf(grid, gamma, kappa, h_scale, orientation)
            curves[f"HTMP κ={kappa:.3g}"] = (grid, density)
        except (HmuDiagError, ValueError, FloatingPointError) as exc:
            notes.append(f"HTMP density not drawn ({exc})")
    elif "htmp_kappa" in row and not math.isfinite(kappa):
        notes.append("HTMP: κ = ∞ (indistinguishable from Marchenko-Pastur)" if kappa == math.inf else
                     "HTMP fit unavailable")
    return curves, notes


def esd_figure(evals: np.ndarray, row: Mapping, *, title: str) -> tuple[bytes, list[str]]:
    """The ESD of one layer with its fits (module docstring), as PNG bytes, and notes for the caption."""
    x = np.sort(np.asarray(evals, dtype=float))
    x = x[x > 0]
    fig, ax = plt.subplots(figsize=(4.4, 3.1))
    notes: list[str] = []
    if x.size >= 2 and x[-1] > x[0]:
        bins = np.geomspace(x[0], x[-1] * (1 + 1e-12), min(60, max(10, x.size // 8)))
        counts, edges = np.histogram(x, bins=bins)
        density = counts / (x.size * np.diff(edges))
        ax.stairs(np.where(density > 0, density, np.nan), edges, fill=True, alpha=0.35, color="0.35", label="ESD")
        curves, notes = density_curves(x, row)
        colours = iter(["C3", "C0", "C2"])
        for label, (gx, gy) in curves.items():
            ax.plot(gx, np.where(gy > 0, gy, np.nan), lw=1.6, color=next(colours), label=label)
        xmin = _num(row, "xmin")
        if math.isfinite(xmin):
            ax.axvline(xmin, color="C3", ls=":", lw=1, label="x_min")
        ax.set_xscale("log")
        ax.set_yscale("log")
        positive = density[density > 0]
        if positive.size:
            ax.set_ylim(positive.min() / 3, positive.max() * 3)
        ax.legend(fontsize=7, loc="lower left", frameon=False)
    else:
        ax.text(0.5, 0.5, "no positive eigenvalues to plot", ha="center", va="center", transform=ax.transAxes)
        notes.append("no positive eigenvalues")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    return to_png(fig), notes


def _plain_log_ticks(ax) -> None:
    """Log-scale y tick labels as plain numbers (1, 2, 3, 5, 10, 20, ...) instead of 2x10^0 ...; minor ticks are
    labelled at leading digits 2, 3 and 5 only, so that they do not overlap."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""))


def depth_figure(layers: pd.DataFrame, *, title: str = "") -> bytes:
    """α by layer index (one line per model), with the random-matrix baseline band when present (single model);
    κ on a second panel when the table has ``htmp_kappa``."""
    has_kappa = "htmp_kappa" in layers and pd.to_numeric(layers["htmp_kappa"], errors="coerce").notna().any()
    fig, axes = plt.subplots(2 if has_kappa else 1, 1, figsize=(7.5, 4.6 if has_kappa else 2.9), sharex=True,
                             squeeze=False)
    ax_a = axes[0, 0]
    for i, (model, group) in enumerate(layers.groupby("model", sort=False)):
        group = group[group["status"].astype(str).eq("ok")]
        idx = np.arange(len(group))
        colour = f"C{i % 10}"
        ax_a.plot(idx, group["alpha"], "o-", ms=3, lw=1, color=colour, label=str(model))
        if "alpha_random" in group and layers["model"].nunique() == 1:
            ax_a.fill_between(idx, group["alpha_random_lo"].astype(float), group["alpha_random_hi"].astype(float),
                              color=colour, alpha=0.12, lw=0)
        if has_kappa:
            kappa = pd.to_numeric(group["htmp_kappa"], errors="coerce")
            axes[1, 0].plot(idx, kappa.where(np.isfinite(kappa)), "s-", ms=3, lw=1, color=colour)
    ax_a.axhspan(2, 6, color="C2", alpha=0.06, lw=0)
    ax_a.set_ylabel("α")
    ax_a.set_yscale("log")
    _plain_log_ticks(ax_a)
    if layers["model"].nunique() <= 12:
        ax_a.legend(fontsize=7, frameon=False, ncol=2)
    if has_kappa:
        axes[1, 0].set_ylabel("HTMP κ")
        axes[1, 0].set_yscale("log")
        _plain_log_ticks(axes[1, 0])
    axes[-1, 0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    names = layers.loc[layers["status"].astype(str).eq("ok"), "layer"].astype(str)
    if layers["model"].nunique() == 1 and 0 < len(names) <= 40:
        axes[-1, 0].set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("layer (analysed layers, in model order)")
    if title:
        ax_a.set_title(title, fontsize=9)
    return to_png(fig)


def scatter_figure(models: pd.DataFrame, metric: str, *, stats_line: str = "") -> bytes:
    """``metric`` against ``accuracy``, one colour per family, with the least-squares line over all models (models
    with a non-finite metric, e.g. κ = ∞, are left out, as in the statistics)."""
    fig, ax = plt.subplots(figsize=(3.8, 3.0))
    data = models[[metric, "accuracy"] + (["family"] if "family" in models else [])]
    data = data[np.isfinite(data[metric].astype(float)) & np.isfinite(data["accuracy"].astype(float))]
    families = data["family"] if "family" in data else pd.Series("(all)", index=data.index)
    for i, (family, group) in enumerate(data.groupby(families, sort=True)):
        ax.scatter(group[metric], group["accuracy"], s=18, color=f"C{i % 10}", label=str(family))
    if len(data) >= 2 and data[metric].nunique() > 1:
        slope, intercept = np.polyfit(data[metric].astype(float), data["accuracy"].astype(float), 1)
        xs = np.linspace(data[metric].min(), data[metric].max(), 2)
        ax.plot(xs, intercept + slope * xs, color="0.3", lw=1)
    if families.nunique() > 1:
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel(metric)
    ax.set_ylabel("accuracy")
    ax.set_title(stats_line, fontsize=8)
    return to_png(fig)
