"""Result files: every format reads back to the table that was written (JSON with its documented inf/NaN encoding)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hmu_diag.errors import OptionError
from hmu_diag.output import write_layers, write_summary


def _table() -> pd.DataFrame:
    return pd.DataFrame({"layer": ["a", "b", "c"], "status": ["ok", "ok", "skipped: 1-D tensor"],
                         "num_evals": [64, 128, 0], "alpha": [2.123456789012345, 1 / 3, np.nan],
                         "htmp_kappa": [0.1 + 0.2, np.inf, np.nan], "dtype": ["float64", "float64", None]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_read_back_exactly(tmp_path, fmt):
    path = write_layers(_table(), tmp_path, fmt)
    back = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert path.name == f"layers.{fmt}"
    assert back["alpha"].iloc[0] == 2.123456789012345 and back["htmp_kappa"].iloc[0] == 0.1 + 0.2
    assert math.isinf(back["htmp_kappa"].iloc[1]) and math.isnan(back["htmp_kappa"].iloc[2])


def test_json_is_strict_keeps_inf_apart_from_nan_and_full_precision(tmp_path):
    path = write_layers(_table(), tmp_path, "json")
    text = path.read_text()
    rows = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert [r["layer"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["alpha"] == 2.123456789012345 and rows[1]["alpha"] == 1 / 3      # repr precision, not 10 digits
    assert rows[0]["htmp_kappa"] == 0.1 + 0.2
    assert rows[1]["htmp_kappa"] == "inf" and rows[2]["htmp_kappa"] is None       # MP-like vs not fitted
    assert rows[2]["dtype"] is None and rows[0]["num_evals"] == 64


def test_summary_json_is_strict(tmp_path):
    summary = pd.DataFrame({"alpha": [3.5], "htmp_kappa": [np.inf], "entropy": [np.nan], "n_ok": [np.int64(4)]},
                           index=pd.Index(["m"], name="model"))
    path = write_summary(summary, tmp_path, extra={"options": {"xmax": None, "seed": 0}})
    payload = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert payload["models"]["m"] == {"alpha": 3.5, "htmp_kappa": "inf", "entropy": None, "n_ok": 4}
    assert payload["options"] == {"xmax": None, "seed": 0}


def test_unknown_format_is_an_option_error(tmp_path):
    with pytest.raises(OptionError, match="format='xlsx'"):
        write_layers(_table(), tmp_path, "xlsx")
