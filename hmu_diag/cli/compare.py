"""``hmu-diag compare``: layer-by-layer comparison of two models (B against A)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._execution import add_pickle_options
from ..choices import CONV_MODES

if TYPE_CHECKING:
    import pandas as pd

HELP = "compare two models layer by layer: per-layer deltas of every metric and a better/worse/same verdict"

EPILOG = """\
how layers are judged (B relative to A):
  layers are matched by name and must have the same shape. For each matched layer
  z = (alpha_B - alpha_A) / sqrt(sigma_A^2 + sigma_B^2), sigma = the power-law fit's standard error:
  |z| <= Z -> same, z < -Z -> better (heavier tail), z > Z -> worse. When both layers have an HTMP kappa
  interval, non-overlapping intervals decide too (smaller kappa = better); if alpha and kappa disagree the
  verdict is 'unclear'. Layers present in one model only, or with different shapes, are listed separately.

what it writes:
  OUTDIR/compare.csv   one row per layer: match, verdict, alpha_z, <metric>_a, <metric>_b, delta_<metric>

examples:
  hmu-diag compare base.safetensors finetuned.safetensors
  hmu-diag compare ckpt_epoch10.pt ckpt_epoch50.pt --top 20 -o reports/epochs
  hmu-diag compare reports/a/layers.csv reports/b/layers.csv --z 3
"""

SHOW = ["layer", "verdict", "alpha_z", "alpha_a", "alpha_b", "delta_alpha", "delta_log_spectral_norm",
        "htmp_kappa_a", "htmp_kappa_b"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``compare``."""
    p = subparsers.add_parser("compare", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="reference model: checkpoint or layers.csv")
    p.add_argument("b", metavar="B", help="model compared against A: checkpoint or layers.csv")
    p.add_argument("-o", "--outdir", default="reports/compare", help="output folder (default: %(default)s)")
    p.add_argument("--z", type=float, default=2.0, metavar="Z",
                   help="standard errors of alpha needed for a better/worse verdict (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="show the K layers that differ most "
                                                                     "(default: %(default)s)")
    p.add_argument("--model-a", help="model to use when A holds several (a folder or a multi-model table)")
    p.add_argument("--model-b", help="model to use when B holds several")
    p.add_argument("--conv", choices=CONV_MODES, default="flat", help="conv layer view (see 'hmu-diag analyze')")
    p.add_argument("--no-htmp", dest="htmp", action="store_false", help="skip the MP and HTMP fits (faster)")
    p.add_argument("--device", default="cpu", help="torch device for eigenvalues (default: %(default)s)")
    add_pickle_options(p)
    return p


def print_comparison(comparison: pd.DataFrame, top: int, stream=None) -> None:
    """Verdict counts, the layers that differ most, and the unmatched layers."""
    import pandas as pd

    from ..compare import verdict_counts
    stream = stream or sys.stdout
    a, b = comparison.attrs.get("a", "A"), comparison.attrs.get("b", "B")
    counts = verdict_counts(comparison)
    print(f"B = {b} compared with A = {a} (verdicts describe B):", file=stream)
    labels = {"n/a": "not fitted (skipped layers, failed fits)"}
    print("  " + ", ".join(f"{labels.get(k, k)}: {v}" for k, v in counts.items() if v), file=stream)
    matched = comparison[comparison["match"].eq("matched") & comparison["verdict"].ne("n/a")]
    cols = [c for c in SHOW if c in matched]
    if len(matched):
        print(f"\nlayers that differ most (by |alpha_z|, top {min(top, len(matched))}):", file=stream)
        with pd.option_context("display.width", 160, "display.max_colwidth", 40):
            print(matched[cols].head(top).to_string(index=False, float_format=lambda v: f"{v:.3g}"), file=stream)
    unmatched = comparison[~comparison["match"].eq("matched")]
    if len(unmatched):
        print("\nunmatched layers:", file=stream)
        for _, row in unmatched.iterrows():
            shapes = f" ({row['shape_a']} vs {row['shape_b']})" if row["match"] == "shape differs" else ""
            print(f"  {row['layer']}: {row['match']}{shapes}", file=stream)


def run(args: argparse.Namespace) -> int:
    """Compare, write compare.csv, print the summary."""
    from ..compare import compare
    comparison = compare(args.a, args.b, z=args.z, model_a=args.model_a, model_b=args.model_b, conv=args.conv,
                         htmp=args.htmp, device=args.device, trust_pickle=args.trust_pickle)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "compare.csv"
    comparison.to_csv(path, index=False)
    print_comparison(comparison, args.top)
    print(f"\nwrote {path}")
    return 0
