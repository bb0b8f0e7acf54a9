"""``hmu-diag rank``: rank models without test data (and, with a manifest of accuracies, test the metrics)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ._execution import add_execution_options, add_pickle_options, execution_kwargs
from ..choices import CONV_MODES, DEFAULT_SCORE, METRICS

if TYPE_CHECKING:
    from ..rank import RankResult

HELP = "rank models by spectral quality, without test data (one fixed score: mean alpha_weighted)"

EPILOG = f"""\
how the ranking works:
  every model gets model-level metrics (means over its weight matrices, embeddings excluded) and is ranked by ONE
  fixed score, the same for every set of models: score = mean alpha_weighted = mean over layers of
  alpha * log10(lambda_max) (Martin, Peng & Mahoney, Nat. Commun. 2021). Lower score = predicted better, rank 1.
  Rankings are meaningful within one architecture series (same layer shapes, or a depth/width series of one design);
  hmu-diag warns when the models' layer shapes differ. Known failure ('scale collapse'): alpha_weighted includes
  log10(lambda_max), so when the better models simply have larger weights (or the worse ones smaller, e.g. distilled
  or under-trained) the score can rank backwards; hmu-diag warns when mean alpha disagrees with the score.

manifest (optional; changes the report, never the ranking):
  CSV   model,accuracy[,family]          (model = name, file name or stem of each checkpoint)
  JSON  {{"model-a.pt": 0.91, ...}}  or  [{{"model": "a", "accuracy": 0.91, "family": "mlp"}}, ...]
  A zoo folder's manifest.json (models_zoo/) works as is (file -> heldout_accuracy, family).
  With it, hmu-diag reports per family and overall, for every metric: Kendall tau, Spearman rho, and R^2 / RMSE of
  the least-squares fit accuracy ~ metric; tau_adj = tau signed so that positive = the metric ranks the expected way.

what it writes (OUTDIR):
  ranking.csv        one row per model: rank, score and every model-level metric
                     ({', '.join(list(METRICS)[:4])}, ...)
  correlations.csv   (with --manifest) one row per family x metric
  layers.csv         the per-layer table used
  report.html        (with --report) one self-contained page with the plots

examples:
  hmu-diag rank models_zoo/digits/batch_size/                      # every checkpoint in a folder
  hmu-diag rank a.safetensors b.safetensors c.safetensors -o out/rank
  hmu-diag rank models_zoo/digits/batch_size/ --manifest models_zoo/digits/batch_size/manifest.json --report
  hmu-diag rank reports/a/layers.csv reports/b/layers.csv # reuse tables from 'hmu-diag analyze'
"""

SHOW = ["rank", "score", "accuracy", "family", "alpha", "alpha_excess", "log_spectral_norm", "log_alpha_norm",
        "htmp_kappa", "n_ok"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``rank``."""
    p = subparsers.add_parser("rank", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="checkpoints, folders of checkpoints (one model per file) or layers.csv tables")
    p.add_argument("--manifest", metavar="FILE", help="CSV/JSON of model -> accuracy [, family] (see below)")
    p.add_argument("-o", "--outdir", default="reports/rank", help="output folder (default: %(default)s)")
    p.add_argument("--report", action="store_true", help="also write OUTDIR/report.html with plots")
    p.add_argument("--include-embeddings", action="store_true",
                   help="include embedding matrices in the model means (excluded by default: their lambda_max is "
                        "orders of magnitude larger)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the random-matrix baseline of alpha (columns alpha_excess, frac_random_like)")
    p.add_argument("--conv", choices=CONV_MODES, default="flat", help="conv layer view (see 'hmu-diag analyze')")
    p.add_argument("--no-htmp", dest="htmp", action="store_false", help="skip the MP and HTMP fits (faster)")
    p.add_argument("--device", default="cpu", help="torch device for eigenvalues (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default: %(default)s)")
    add_execution_options(p)
    add_pickle_options(p)
    return p


def print_result(result: RankResult, stream=None) -> None:
    """The ranking, the best metric per family and the warnings, readable."""
    import pandas as pd
    stream = stream or sys.stdout
    cols = [c for c in SHOW if c in result.models]
    with pd.option_context("display.max_rows", 500, "display.width", 160, "display.max_colwidth", 40):
        print(f"score = mean {DEFAULT_SCORE} (alpha x log10 lambda_max); lower = predicted better, rank 1 = best\n",
              file=stream)
        print(result.models[cols].to_string(float_format=lambda v: f"{v:.4g}"), file=stream)
        if not result.best.empty:
            print("\nmetric that ranks best (sign-adjusted Kendall tau; positive = expected direction):", file=stream)
            print(result.best.to_string(index=False, float_format=lambda v: f"{v:.3f}"), file=stream)
            overall = result.correlations[result.correlations["metric"].eq(DEFAULT_SCORE)]
            for _, row in overall.iterrows():
                print(f"  score ({DEFAULT_SCORE}) in {row['family']}: tau_adj {row['tau_adj']:.3f}, "
                      f"rho_adj {row['rho_adj']:.3f}, R^2 {row['r2']:.3f} (n={row['n']})", file=stream)
    for warning in result.warnings:
        print(f"warning: {warning}", file=stream)


def run(args: argparse.Namespace) -> int:
    """Rank, write the tables (and report), print the ranking."""
    from ..rank import rank
    result = rank(args.paths, manifest=args.manifest, baseline=args.baseline,
                  exclude_kinds=() if args.include_embeddings else ("embedding",), seed=args.seed, conv=args.conv,
                  htmp=args.htmp, device=args.device, trust_pickle=args.trust_pickle, **execution_kwargs(args))
    from ..report import write_report          # matplotlib is imported only when a command needs it
    from ..report.tables import write_tables
    paths = write_tables(result, args.outdir)
    if args.report:
        paths.append(write_report(result, args.outdir, title="hmu-diag model ranking"))
    print_result(result)
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
