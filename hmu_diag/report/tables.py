"""CSV tables written next to a report (and by ``hmu-diag rank``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..rank import RankResult


def write_tables(obj: pd.DataFrame | RankResult, outdir: str | Path) -> list[Path]:
    """Write ``layers.csv`` (the per-layer table) and, for a :class:`RankResult`, ``ranking.csv`` and (with a
    manifest) ``correlations.csv`` into ``outdir``; return the paths written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    layers = obj.layers if isinstance(obj, RankResult) else obj
    paths = [outdir / "layers.csv"]
    layers.to_csv(paths[0], index=False)
    if isinstance(obj, RankResult):
        paths.append(outdir / "ranking.csv")
        obj.models.to_csv(paths[-1])
        if not obj.correlations.empty:
            paths.append(outdir / "correlations.csv")
            obj.correlations.to_csv(paths[-1], index=False)
    return paths
