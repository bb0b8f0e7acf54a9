"""Model-level summaries of the per-layer table."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

SUMMARY_METRICS = ["alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank",
                   "entropy", "D"]


def summarize(layers: pd.DataFrame, *, exclude_kinds: Iterable[str] = ("embedding",)) -> pd.DataFrame:
    """One row per model: unweighted means of the layer metrics over layers whose fit succeeded.

    Layers of the kinds in ``exclude_kinds`` (embeddings by default: their λ_max is orders of magnitude larger than any
    other layer's, htsr_literature §4.7), skipped layers and failed fits are left out of the means and counted instead.
    Columns: ``<metric>`` (mean), ``alpha_median``, ``n_layers`` (rows), ``n_ok``, ``n_skipped``, ``n_failed``,
    ``n_excluded`` (ok rows of excluded kinds), and ``frac_<warning>`` for each WeightWatcher warning label.
    """
    if layers.empty:
        return pd.DataFrame(columns=["n_layers"]).rename_axis("model")
    excluded = set(exclude_kinds)
    status = layers["status"].astype(str)
    ok = status.eq("ok")
    used = layers[ok & ~layers["kind"].isin(excluded)]
    groups = layers.groupby("model", sort=False)
    out = pd.DataFrame({
        "n_layers": groups.size(),
        "n_ok": ok.groupby(layers["model"], sort=False).sum(),
        "n_skipped": status.str.startswith("skipped").groupby(layers["model"], sort=False).sum(),
        "n_failed": status.str.startswith("failed").groupby(layers["model"], sort=False).sum(),
        "n_excluded": (ok & layers["kind"].isin(excluded)).groupby(layers["model"], sort=False).sum(),
    })
    metrics = [m for m in SUMMARY_METRICS if m in used]
    means = used.groupby("model", sort=False)[metrics].mean()
    out = out.join(means)
    if "alpha" in used:
        out["alpha_median"] = used.groupby("model", sort=False)["alpha"].median()
    if "warning" in used:
        for label in ("under-trained", "over-trained"):
            out[f"frac_{label}"] = used["warning"].eq(label).groupby(used["model"], sort=False).mean()
    return out.rename_axis("model")
