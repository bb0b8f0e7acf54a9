"""Writing result tables: the per-layer table (CSV / JSON / Parquet) and the model summary (JSON).

JSON has no infinity and no NaN, and the two mean different things here (``htmp_kappa = inf``: indistinguishable
from Marchenko-Pastur; NaN: not fitted), so JSON files write +-inf as the strings ``"inf"`` / ``"-inf"`` and NaN as
``null``; every finite float is written at full precision (``repr``), so it reads back exactly.  CSV and Parquet
keep inf and NaN as such.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .choices import FORMATS
from .errors import OptionError


def write_layers(layers: pd.DataFrame, outdir: str | Path, fmt: str = "csv") -> Path:
    """Write the per-layer table to ``OUTDIR/layers.<fmt>`` and return the path."""
    if fmt not in FORMATS:
        raise OptionError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"layers.{fmt}"
    if fmt == "csv":
        layers.to_csv(path, index=False)
    elif fmt == "json":
        records = [{k: _plain(v) for k, v in row.items()} for row in layers.to_dict(orient="records")]
        path.write_text(json.dumps(records, indent=1))
    else:
        try:
            layers.to_parquet(path, index=False)
        except ImportError as exc:
            raise OptionError(f"format='parquet' needs pyarrow ({exc}); pip install pyarrow") from None
    return path


def _plain(value: Any) -> Any:
    """A strict-JSON scalar: numpy scalars as Python ones, NaN (and None) as None, +-inf as "inf" / "-inf"."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_summary(summary: pd.DataFrame, outdir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``OUTDIR/summary.json``: ``{"models": {model: {metric: value}}, ...extra}``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    models = {str(model): {k: _plain(v) for k, v in row.items()}
              for model, row in summary.to_dict(orient="index").items()}
    payload = {"models": models, **(extra or {})}
    path = outdir / "summary.json"
    path.write_text(json.dumps(payload, indent=2, default=_plain))
    return path
