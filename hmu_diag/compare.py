"""Compare two models layer by layer (e.g. before/after fine-tuning, two checkpoints of one run).

Layers are aligned by name (``source`` and ``layer``) and must have the same shape; every numeric metric gets its
two values and the delta B − A.  Each matched layer gets a verdict describing **B relative to A**:

* from α (power-law exponent; lower = heavier tail = more learned structure, Martin & Mahoney 2021):
  z = (α_B − α_A) / √(σ_A² + σ_B²) with σ = (α−1)/√n_tail the fit's standard error; |z| ≤ ``z`` → "same",
  z < −``z`` → "better", z > ``z`` → "worse";
* from HTMP κ when both layers have a κ interval (``htmp_kappa_lo``/``_hi``): overlapping intervals → "same", else
  smaller κ (heavier tail) → "better";
* ``verdict`` is the α verdict, the κ verdict when α is missing, and "unclear" when the two disagree.

Caveat: "lower α is better" holds in the usual 2 ≲ α ≲ 6 range; α < 2 is WeightWatcher's "over-trained" (see the
``warning`` columns).  σ covers the sampling error of the tail only, not the choice of x_min.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import HmuDiagError
from .rank import layers_table

KEY = ["source", "layer"]
NOT_METRICS = {"N", "M", "Q", "gamma", "num_evals"}
VERDICTS = ("better", "worse", "same", "unclear", "n/a")


def _one_model(table: pd.DataFrame, model: str | None, label: str) -> pd.DataFrame:
    names = list(table["model"].dropna().unique())
    if model is not None:
        if model not in names:
            raise HmuDiagError(f"{label}: no model {model!r} (models: {', '.join(map(str, names))})")
        table = table[table["model"] == model]
    elif len(names) > 1:
        raise HmuDiagError(f"{label}: holds {len(names)} models ({', '.join(map(str, names[:5]))}); choose one")
    table = table.copy()
    if "source" not in table:
        table["source"] = "weights"
    table["source"] = table["source"].fillna("weights")
    if table.duplicated(KEY).any():
        dup = table.loc[table.duplicated(KEY), "layer"].iloc[0]
        raise HmuDiagError(f"{label}: layer {dup!r} appears twice")
    return table


def _alpha_verdict(frame: pd.DataFrame, z: float) -> tuple[np.ndarray, np.ndarray]:
    def col(name: str) -> np.ndarray:
        return pd.to_numeric(frame.get(name, pd.Series(np.nan, index=frame.index)), errors="coerce").to_numpy(float)
    diff = col("alpha_b") - col("alpha_a")
    se = np.sqrt(col("sigma_a") ** 2 + col("sigma_b") ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    verdict = np.where(~np.isfinite(diff), "n/a",
                       np.where(np.abs(score) <= z, "same", np.where(score < 0, "better", "worse")))
    return score, verdict


def _kappa_verdict(frame: pd.DataFrame) -> np.ndarray:
    needed = [f"htmp_kappa{s}_{side}" for s in ("", "_lo", "_hi") for side in "ab"]
    if not all(c in frame for c in needed):
        return np.full(len(frame), "n/a", dtype=object)
    k = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(float) for c in needed}
    valid = np.isfinite(k["htmp_kappa_a"]) & np.isfinite(k["htmp_kappa_b"])
    overlap = (k["htmp_kappa_lo_b"] <= k["htmp_kappa_hi_a"]) & (k["htmp_kappa_lo_a"] <= k["htmp_kappa_hi_b"])
    lower = k["htmp_kappa_b"] < k["htmp_kappa_a"]
    return np.where(~valid, "n/a", np.where(overlap, "same", np.where(lower, "better", "worse"))).astype(object)


def compare(a: Any, b: Any, *, z: float = 2.0, model_a: str | None = None, model_b: str | None = None,
            **analyze_options: Any) -> pd.DataFrame:
    """Layer-by-layer comparison of model B against model A.

    Parameters
    ----------
    a, b : checkpoints, modules, state dicts, per-layer tables (DataFrame or saved ``layers.csv``); each must hold one
        model, or name it with ``model_a`` / ``model_b``.
    z : significance threshold (in standard errors of α) for a "better"/"worse" verdict.
    **analyze_options : passed to :func:`hmu_diag.analyze` for sources that are not tables.

    Returns
    -------
    DataFrame, one row per layer of A or B: ``source, layer, match`` ("matched", "only in A", "only in B",
    "shape differs"), ``shape_a, shape_b``, ``<metric>_a``, ``<metric>_b`` and ``delta_<metric>`` (B − A) for every
    numeric metric, ``alpha_z``, ``verdict_alpha``, ``verdict_kappa``, ``verdict`` (module docstring).  Matched rows
    come first, ordered by |alpha_z| (the layers that differ most first), then the unmatched ones.  ``attrs`` hold
    the model names (``"a"``, ``"b"``) and ``z``.
    """
    label_a = str(a) if not isinstance(a, pd.DataFrame) else "A"
    label_b = str(b) if not isinstance(b, pd.DataFrame) else "B"
    ta = _one_model(layers_table(a, **analyze_options), model_a, label_a)
    tb = _one_model(layers_table(b, **analyze_options), model_b, label_b)
    merged = ta.merge(tb, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True, sort=False)
    shape_a = merged["shape_a"].astype(str)
    shape_b = merged["shape_b"].astype(str)
    merged["match"] = np.select(
        [merged["_merge"].eq("left_only"), merged["_merge"].eq("right_only"), shape_a.ne(shape_b)],
        ["only in A", "only in B", "shape differs"], default="matched")
    metrics = [c for c in ta.columns if c in tb.columns and c not in KEY and c not in NOT_METRICS
               and pd.api.types.is_numeric_dtype(ta[c]) and pd.api.types.is_numeric_dtype(tb[c])]
    matched = merged["match"].eq("matched")
    deltas = {f"delta_{m}": (merged[f"{m}_b"] - merged[f"{m}_a"]).where(matched) for m in metrics}
    merged = pd.concat([merged, pd.DataFrame(deltas, index=merged.index)], axis=1)
    score, verdict_alpha = _alpha_verdict(merged, z)
    merged["alpha_z"] = np.where(matched, score, np.nan)
    merged["verdict_alpha"] = np.where(matched, verdict_alpha, "n/a")
    merged["verdict_kappa"] = np.where(matched, _kappa_verdict(merged), "n/a")
    decided = {"better", "worse"}
    conflict = merged["verdict_alpha"].isin(decided) & merged["verdict_kappa"].isin(decided) & \
        merged["verdict_alpha"].ne(merged["verdict_kappa"])
    merged["verdict"] = np.where(conflict, "unclear",
                                 np.where(merged["verdict_alpha"].eq("n/a"), merged["verdict_kappa"],
                                          merged["verdict_alpha"]))
    order = np.lexsort((-np.nan_to_num(np.abs(merged["alpha_z"].to_numpy(float)), nan=-1.0), ~matched.to_numpy()))
    front = ["source", "layer", "match", "verdict", "verdict_alpha", "verdict_kappa", "alpha_z", "shape_a", "shape_b"]
    pairs = [c for m in metrics for c in (f"{m}_a", f"{m}_b", f"delta_{m}")]
    rest = [c for c in merged.columns if c not in front + pairs and c != "_merge"]
    out = merged.iloc[order][front + pairs + rest].reset_index(drop=True)
    out.attrs.update(a=str(ta["model"].iloc[0]) if len(ta) else label_a,
                     b=str(tb["model"].iloc[0]) if len(tb) else label_b, z=z)
    return out


def verdict_counts(comparison: pd.DataFrame) -> pd.Series:
    """Number of matched layers per verdict, plus the unmatched counts."""
    matched = comparison[comparison["match"].eq("matched")]
    counts = matched["verdict"].value_counts().reindex(VERDICTS, fill_value=0)
    unmatched = comparison.loc[~comparison["match"].eq("matched"), "match"].value_counts()
    return pd.concat([counts, unmatched])
