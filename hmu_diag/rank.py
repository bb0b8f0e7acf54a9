"""Rank models without test data, and (given accuracies) measure how well each spectral metric ranks them.

The ranking
-----------
Every model gets one row of model-level metrics (means over its weight matrices; embeddings excluded, htsr_literature
§4.7) and is ranked by ONE fixed score, the same for every set of models and chosen without looking at any accuracy:

    score = ⟨α̂⟩ = mean over layers of α_l · log10 λ_max,l        (``alpha_weighted``; lower = predicted better)

Why this one (htsr_literature §0, §1.2, §1.4): α̂ is the headline metric of Martin, Peng & Mahoney (Nat. Commun. 12,
4122, 2021).  Within architecture series it has Kendall τ = −0.93 (VGG), −1.0 (ResNet, DenseNet), −0.89 (ResNet-1K)
against ImageNet accuracy, and a mean |τ| of 0.64 over 27 OSMR series, against 0.52 for the spectral norm.  The plain
mean ⟨α⟩ does not rank models of different depth (τ = +0.86, −0.60, 0.00, −0.08 on the same series: anchor A5), and the
α̂ / log α-norm pair is what the paper recommends for series that vary depth and hyper-parameters (§5.5).  Its known
failure is *scale collapse* (§4.9, anchor A7): a poorly trained or distilled model can have small λ_max and so a small
α̂.  :func:`rank` therefore warns when ⟨α̂⟩ and ⟨α⟩ order the models in opposite directions.

With accuracies (a manifest)
----------------------------
The manifest never changes the ranking; it adds the Martin-Peng-Mahoney protocol (§1.1) for every metric, per family
and over all models: Kendall τ and Spearman ρ between the metric and accuracy, and R² and RMSE of the OLS fit
accuracy ≈ a + b·metric.  Each metric has an expected direction fixed in advance (``METRICS``); ``tau_adj`` and
``rho_adj`` are τ and ρ multiplied by that direction, so **positive = the metric orders the models the expected way**.
Correlations hold within an architecture series, not across (§4.10): a warning is raised when models differ in
their layer shapes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .choices import DEFAULT_SCORE, METRICS, TABLE_SUFFIXES
from .errors import HmuDiagError, OptionError
from .summary import summarize

OVERALL = "(all)"
MIN_MODELS = 3   # fewer models give no meaningful rank correlation
SMALL_ESD = 50   # fewer eigenvalues give a noisy alpha (htsr_literature §4.8: NC 2021 and TempBalance use >= 50)
_ACCURACY_KEYS = ("accuracy", "acc", "test_accuracy", "heldout_accuracy", "top1", "val_accuracy")
_MODEL_KEYS = ("model", "name", "file", "path", "checkpoint")


# ----------------------------------------------------------------------------------------------------------- inputs

def read_layers(path: str | Path) -> pd.DataFrame:
    """A per-layer table written by ``hmu-diag analyze`` (``layers.csv`` / ``layers.parquet``)."""
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise HmuDiagError(f"{path}: cannot read the layer table ({exc})") from None
    missing = [c for c in ("model", "layer", "status") if c not in table]
    if missing:
        raise HmuDiagError(f"{path}: not an hmu-diag layer table (no column {', '.join(missing)})")
    if "warning" in table:
        table["warning"] = table["warning"].astype(object).where(table["warning"].notna(), "")
    return table


def layers_table(source: Any, **analyze_options: Any) -> pd.DataFrame:
    """The per-layer table of ``source``: a DataFrame as is, a saved table (.csv/.parquet) read, anything else analysed
    with :func:`hmu_diag.pipeline.analyze` (a checkpoint, a directory of checkpoints, a module or a state dict)."""
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, (str, Path)) and Path(source).suffix in TABLE_SUFFIXES and Path(source).is_file():
        return read_layers(source)
    from .pipeline import analyze
    return analyze(source, **analyze_options)


def _name_keys(name: str) -> list[str]:
    """Keys a manifest entry may use for a model: its name, file name and file name without extensions."""
    base = Path(str(name)).name
    return [str(name), base, base.split(".")[0], str(Path(str(name)).with_suffix(""))]


def read_manifest(manifest: str | Path | pd.DataFrame | dict) -> pd.DataFrame:
    """Accuracy per model: DataFrame with columns ``key, accuracy, family``.

    Accepted: a CSV with a model column (``model``/``name``/``file``/``path``/``checkpoint``), an accuracy column
    (``accuracy``/``acc``/``test_accuracy``/``heldout_accuracy``/``top1``/``val_accuracy``) and optionally ``family``;
    a JSON file holding either ``{"model": accuracy, ...}`` or a list of records like the CSV rows (also under a
    ``"models"`` key); or the same as a DataFrame / dict.  Keys match a model by name, file name or stem.
    """
    label = str(manifest) if isinstance(manifest, (str, Path)) else "manifest"
    frame = _manifest_frame(manifest, label)
    model_col = next((c for c in _MODEL_KEYS if c in frame), None)
    acc_col = next((c for c in _ACCURACY_KEYS if c in frame), None)
    if model_col is None or acc_col is None:
        raise HmuDiagError(f"{label}: needs a model column ({'/'.join(_MODEL_KEYS)}) and an accuracy column "
                           f"({'/'.join(_ACCURACY_KEYS)}); found {', '.join(map(str, frame.columns)) or 'nothing'}")
    accuracy = pd.to_numeric(frame[acc_col], errors="coerce")
    if accuracy.isna().any():
        bad = frame.loc[accuracy.isna(), model_col].iloc[0]
        raise HmuDiagError(f"{label}: accuracy of {bad!r} is not a number")
    family = frame["family"].astype(str) if "family" in frame else pd.Series(OVERALL, index=frame.index)
    out = pd.DataFrame({"key": frame[model_col].astype(str), "accuracy": accuracy.astype(float), "family": family})
    if out["key"].duplicated().any():
        raise HmuDiagError(f"{label}: model {out['key'][out['key'].duplicated()].iloc[0]!r} is listed twice")
    return out.reset_index(drop=True)


def _manifest_frame(manifest: Any, label: str) -> pd.DataFrame:
    if isinstance(manifest, pd.DataFrame):
        return manifest
    if isinstance(manifest, dict):
        return _records_frame(manifest)
    path = Path(manifest)
    if not path.is_file():
        raise HmuDiagError(f"{label}: manifest file not found")
    try:
        if path.suffix.lower() == ".json":
            return _records_frame(json.loads(path.read_text()))
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise HmuDiagError(f"{label}: cannot read the manifest ({exc})") from None


def _records_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, dict) and "models" in data:
        data = data["models"]
    if isinstance(data, dict) and all(isinstance(v, (int, float)) for v in data.values()):
        return pd.DataFrame({"model": list(data), "accuracy": list(data.values())})
    if isinstance(data, dict):
        return pd.DataFrame([{"model": k, **v} for k, v in data.items()])
    return pd.DataFrame(list(data))


# -------------------------------------------------------------------------------------------------- model metrics

def model_metrics(layers: pd.DataFrame, *, exclude_kinds: Iterable[str] = ("embedding",)) -> pd.DataFrame:
    """One row per model: the columns of :func:`hmu_diag.summary.summarize` (means of α, α̂, norms …) plus, when the
    layer table has them, the mean ``alpha_excess`` and ``frac_random_like`` (random baseline), the median ``htmp_kappa``,
    the mean ``htmp_log_kappa`` (finite κ) and ``frac_mp_like`` (κ = ∞), the mean of every other numeric
    ``htmp_*``/``mp_*`` column (finite values), and ``frac_phase_<phase>``.

    Only weight-matrix rows (``source == "weights"``) with a successful fit count; ``exclude_kinds`` are left out.
    """
    if "source" in layers:
        layers = layers[layers["source"].fillna("weights").eq("weights")]
    excluded = tuple(exclude_kinds)
    out = summarize(layers, exclude_kinds=excluded)
    used = layers[layers["status"].astype(str).eq("ok") & ~layers["kind"].isin(excluded)]
    by_model = used.groupby("model", sort=False)
    extra = pd.DataFrame(index=out.index)
    if "alpha_excess" in used:
        extra["alpha_excess"] = by_model["alpha_excess"].mean()
        extra["frac_random_like"] = by_model["random_like"].apply(lambda s: s.dropna().astype(float).mean())
    for col in used.columns:
        if (col.startswith(("htmp_", "mp_")) and not col.endswith(("_lo", "_hi"))
                and pd.api.types.is_numeric_dtype(used[col])):
            finite = used[col].where(np.isfinite(used[col].astype(float)))
            extra[col] = finite.groupby(used["model"], sort=False).mean()
    if "htmp_kappa" in used:
        kappa = pd.to_numeric(used["htmp_kappa"], errors="coerce")
        extra["htmp_kappa"] = kappa.groupby(used["model"], sort=False).median()
        finite = kappa.where(np.isfinite(kappa) & (kappa > 0))
        extra["htmp_log_kappa"] = np.log10(finite).groupby(used["model"], sort=False).mean()
        extra["frac_mp_like"] = kappa.eq(np.inf).where(kappa.notna()).groupby(used["model"], sort=False).mean()
    if "phase" in used:
        phases = pd.crosstab(used["model"], used["phase"].fillna("unknown"), normalize="index")
        for phase in phases.columns:
            extra[f"frac_phase_{phase}"] = phases[phase]
    return out.join(extra)


def architecture_signature(layers: pd.DataFrame, *, exclude_kinds: Iterable[str] = ("embedding",)) -> pd.Series:
    """Per model, the sorted tuple of (kind, shape) of its analysed weight matrices: equal signatures = same
    architecture up to layer names.  Files of a folder that were not read as models (kind ``file``) have none."""
    rows = layers[~layers["kind"].isin((*exclude_kinds, "file"))]
    if "source" in rows:
        rows = rows[rows["source"].fillna("weights").eq("weights")]
    return rows.groupby("model", sort=False).apply(
        lambda g: tuple(sorted(zip(g["kind"].astype(str), g["shape"].astype(str)))), include_groups=False)


# ------------------------------------------------------------------------------------------------- correlations

def correlation_stats(metric: Sequence[float], accuracy: Sequence[float], direction: int = 0) -> dict[str, float]:
    """Martin-Peng-Mahoney statistics of one metric against accuracy (finite pairs only).

    ``tau``/``rho``: Kendall τ-b and Spearman ρ (scipy.stats); ``r2``/``rmse``: OLS accuracy = a + b·metric,
    R² = 1 − SS_res/SS_tot, RMSE = √(SS_res/n) in accuracy units; ``tau_adj``/``rho_adj`` = direction · τ/ρ
    (NaN when direction is 0).  NaN everywhere with fewer than 3 pairs or a constant metric.
    """
    x = np.asarray(metric, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(x.size), "tau": math.nan, "tau_p": math.nan, "rho": math.nan, "r2": math.nan,
           "rmse": math.nan, "tau_adj": math.nan, "rho_adj": math.nan}
    if x.size < MIN_MODELS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    out.update(tau=float(tau.statistic), tau_p=float(tau.pvalue), rho=float(rho.statistic),
               r2=1.0 - ss_res / ss_tot, rmse=math.sqrt(ss_res / x.size))
    if direction:
        out.update(tau_adj=direction * out["tau"], rho_adj=direction * out["rho"])
    return out


def metric_correlations(models: pd.DataFrame, *, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Correlation statistics (:func:`correlation_stats`) of every metric column of ``models`` against its
    ``accuracy`` column, per ``family`` (families with ≥ 3 models) and over all models (family ``"(all)"``)."""
    metrics = [m for m in (metrics or metric_columns(models)) if m in models]
    groups: list[tuple[str, pd.DataFrame]] = [(OVERALL, models)]
    if "family" in models and models["family"].nunique() > 1:
        groups += [(str(f), g) for f, g in models.groupby("family", sort=True) if len(g) >= MIN_MODELS]
    rows = []
    for family, group in groups:
        for metric in metrics:
            direction = METRICS.get(metric, (0, ""))[0]
            rows.append({"family": family, "metric": metric, "direction": direction,
                         **correlation_stats(group[metric], group["accuracy"], direction)})
    return pd.DataFrame(rows)


def best_metrics(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per family, the metric with the highest sign-adjusted Kendall τ (metrics with a fixed direction only)."""
    usable = correlations[correlations["direction"].ne(0) & correlations["tau_adj"].notna()]
    if usable.empty:
        return pd.DataFrame(columns=["family", "metric", "tau_adj", "rho_adj", "r2", "n"])
    idx = usable.groupby("family", sort=False)["tau_adj"].idxmax()
    return usable.loc[idx, ["family", "metric", "tau_adj", "rho_adj", "r2", "n"]].reset_index(drop=True)


def metric_columns(models: pd.DataFrame) -> list[str]:
    """The numeric model-level metric columns (known metrics first, then HTMP/MP/phase summaries)."""
    known = [m for m in METRICS if m in models]
    extra = [c for c in models.columns if c.startswith(("htmp_", "mp_", "frac_phase_")) and c not in known]
    return [c for c in known + extra if pd.api.types.is_numeric_dtype(models[c])]


# ------------------------------------------------------------------------------------------------------- ranking

@dataclass(frozen=True)
class RankResult:
    """Result of :func:`rank`.

    models        one row per model (index ``model``): model-level metrics, ``score`` (= ⟨α̂⟩), ``rank`` (1 = predicted
                  best; NaN when no layer could be fitted), and ``accuracy``/``family`` when a manifest was given.
                  Sorted by rank.
    layers        the per-layer table the metrics come from (with the random-baseline columns when computed)
    correlations  one row per (family, metric): n, direction, tau, tau_p, rho, r2, rmse, tau_adj, rho_adj
                  (empty without a manifest)
    best          per family, the metric with the highest sign-adjusted τ (empty without a manifest)
    warnings      plain-language warnings (architecture mix, scale collapse, unmatched manifest entries ...)
    score_metric  the metric behind ``score`` (always ``"alpha_weighted"``); lower = predicted better
    """

    models: pd.DataFrame = field(repr=False)
    layers: pd.DataFrame = field(repr=False)
    correlations: pd.DataFrame = field(repr=False)
    best: pd.DataFrame = field(repr=False)
    warnings: tuple[str, ...] = ()
    score_metric: str = DEFAULT_SCORE

    def __repr__(self) -> str:
        top = ", ".join(f"{m} ({s:.3g})" for m, s in self.models["score"].head(3).items())
        return (f"RankResult({len(self.models)} models, score={self.score_metric} (lower is better), "
                f"top: {top or '-'}, {len(self.correlations)} correlations, {len(self.warnings)} warnings)")


def _concat_tables(sources: Sequence[Any], analyze_options: dict[str, Any]) -> pd.DataFrame:
    tables = []
    seen: dict[str, str] = {}
    for source in sources:
        table = layers_table(source, **analyze_options)
        label = str(source) if isinstance(source, (str, Path)) else type(source).__name__
        for name in table["model"].dropna().unique():
            if name in seen:
                raise HmuDiagError(f"{label}: model name {name!r} also comes from {seen[name]}; rename one of them")
            seen[str(name)] = label
        tables.append(table)
    if not tables:
        raise OptionError("rank: no models given")
    return pd.concat(tables, ignore_index=True)


def _attach_manifest(models: pd.DataFrame, manifest: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    lookup = {k: i for i, k in enumerate(manifest["key"])}
    matched = {}
    for name in models.index:
        hit = next((lookup[k] for k in _name_keys(name) if k in lookup), None)
        if hit is not None:
            matched[name] = hit
    models = models.copy()
    models["accuracy"] = [manifest["accuracy"].iloc[matched[m]] if m in matched else np.nan for m in models.index]
    models["family"] = [manifest["family"].iloc[matched[m]] if m in matched else OVERALL for m in models.index]
    unmatched_models = [m for m in models.index if m not in matched]
    unused = sorted(set(manifest["key"]) - {manifest["key"].iloc[i] for i in matched.values()})
    if unmatched_models:
        warnings.append(f"{len(unmatched_models)} model(s) have no accuracy in the manifest and are left out of the "
                        f"correlations: {', '.join(map(str, unmatched_models[:5]))}{' ...' if len(unmatched_models) > 5 else ''}")
    if unused:
        warnings.append(f"{len(unused)} manifest entr(y/ies) match no model: {', '.join(unused[:5])}"
                        f"{' ...' if len(unused) > 5 else ''}")
    return models


def _architecture_warnings(layers: pd.DataFrame, models: pd.DataFrame, exclude_kinds, warnings: list[str]) -> None:
    signature = architecture_signature(layers, exclude_kinds=exclude_kinds)
    families = models["family"] if "family" in models else pd.Series(OVERALL, index=models.index)
    for family, names in families.groupby(families, sort=True).groups.items():
        n_arch = signature.reindex(names).dropna().nunique()
        if n_arch > 1:
            where = "these models" if family == OVERALL else f"family {family!r}"
            warnings.append(f"{where} span {n_arch} different architectures (layer shapes differ): spectral metrics "
                            "rank models within one architecture series; rankings across architectures are "
                            "unreliable (Martin et al. 2021).")


def _small_layer_warning(layers: pd.DataFrame, exclude_kinds, warnings: list[str]) -> None:
    if "num_evals" not in layers:
        return
    used = layers[layers["status"].astype(str).eq("ok") & ~layers["kind"].isin(tuple(exclude_kinds))]
    small = used[pd.to_numeric(used["num_evals"], errors="coerce") < SMALL_ESD]
    if len(small):
        names = sorted(set(small["layer"].astype(str)))
        warnings.append(f"{len(small)} of the {len(used)} fitted layers have fewer than {SMALL_ESD} eigenvalues "
                        f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}); their alpha is noisy and enters "
                        "the model means with full weight.")


def _scale_collapse_warning(models: pd.DataFrame, warnings: list[str]) -> None:
    stat = correlation_stats(models["alpha_weighted"], models["alpha"]) if "alpha" in models else {"tau": math.nan}
    if stat["tau"] < 0:
        warnings.append(f"the score (mean alpha_weighted = alpha x log10 lambda_max) and mean alpha order the models in "
                        f"opposite directions (Kendall tau {stat['tau']:.2f}): the spectral-norm factor dominates. A "
                        "poorly trained or distilled model with small weights can look best ('scale collapse'); "
                        "check the alpha and log_spectral_norm columns separately.")


def rank(sources_or_tables: Any, *, manifest: str | Path | pd.DataFrame | dict | None = None,
         exclude_kinds: Iterable[str] = ("embedding",), baseline: bool = True, baseline_draws: int = 20,
         seed: int = 0, **analyze_options: Any) -> RankResult:
    """Rank models by the fixed score ⟨α̂⟩ (lower = predicted better; module docstring), without test data.

    Parameters
    ----------
    sources_or_tables : one or a list of: checkpoints, directories of checkpoints (one model per file), modules,
        state dicts, per-layer tables from :func:`hmu_diag.analyze` or saved ``layers.csv`` / ``.parquet`` files.
        Model names must be unique across them.
    manifest : accuracies (see :func:`read_manifest`); adds correlation statistics per family, never changes the ranking.
    exclude_kinds : layer kinds left out of the model-level means (embeddings by default).
    baseline : add the shape-matched random baseline of α (:func:`hmu_diag.baseline.add_random_baseline`), giving the
        ``alpha_excess`` and ``frac_random_like`` metrics.
    baseline_draws, seed : random draws per matrix shape for the baseline, and its seed.
    **analyze_options : passed to :func:`hmu_diag.analyze` for sources that are not tables (``conv``, ``dtype`` …).
    """
    if isinstance(sources_or_tables, (str, Path, pd.DataFrame)) or not isinstance(sources_or_tables, Sequence):
        sources_or_tables = [sources_or_tables]
    exclude_kinds = tuple(exclude_kinds)
    layers = _concat_tables(list(sources_or_tables), {"seed": seed, **analyze_options})
    if baseline and "alpha" in layers:
        from .baseline import add_random_baseline
        fit_options = {k: analyze_options[k] for k in ("fix_fingers",) if analyze_options.get(k) is not None}
        layers = add_random_baseline(layers, seed=seed, n_draws=baseline_draws, **fit_options)
    models = model_metrics(layers, exclude_kinds=exclude_kinds)
    if DEFAULT_SCORE not in models:
        models[DEFAULT_SCORE] = np.nan
    models["score"] = models[DEFAULT_SCORE]
    models["rank"] = models["score"].rank(method="min", ascending=True)
    warnings: list[str] = []
    unscored = models.index[models["score"].isna()].tolist()
    if unscored:
        warnings.append(f"{len(unscored)} model(s) have no successfully fitted layer and are not ranked: "
                        f"{', '.join(map(str, unscored[:5]))}")
    correlations = pd.DataFrame()
    if manifest is not None:
        models = _attach_manifest(models, read_manifest(manifest), warnings)
        scored = models[models["accuracy"].notna()]
        correlations = metric_correlations(scored)
    _architecture_warnings(layers, models, exclude_kinds, warnings)
    _small_layer_warning(layers, exclude_kinds, warnings)
    _scale_collapse_warning(models, warnings)
    models = models.sort_values(["rank", "score"], na_position="last", kind="stable")
    best = best_metrics(correlations) if not correlations.empty else best_metrics(
        pd.DataFrame(columns=["family", "metric", "direction", "tau_adj", "rho_adj", "r2", "n"]))
    return RankResult(models=models, layers=layers, correlations=correlations, best=best, warnings=tuple(warnings))
