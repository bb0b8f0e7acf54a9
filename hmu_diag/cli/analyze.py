"""``hmu-diag analyze``: per-layer spectral metrics of one checkpoint (or a directory of them)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ._execution import add_execution_options, add_pickle_options, execution_kwargs
from ..choices import CONV_MODES, ESD_DTYPES, FIX_FINGERS, FORMATS, HTMP_ORIENTATIONS, SPECTRUM_MODES

if TYPE_CHECKING:
    import pandas as pd

HELP = "analyse every weight matrix of a checkpoint: power-law, MP and HTMP fits per layer"

EPILOG = """\
what it writes:
  OUTDIR/layers.<format>   one row per matrix: model, layer, kind, shape, status (ok / skipped: why / failed: why),
                           alpha, D (KS distance), sigma, xmin, num_pl_spikes (tail size), log_norm,
                           log_spectral_norm, alpha_weighted, stable_rank, entropy, rank_loss, dtype, warning,
                           and the HTMP columns htmp_kappa (+CI), htmp_delta, htmp_pred_alpha, mp_D, phase ...
  OUTDIR/summary.json      model-level means (embeddings excluded) and the options used

examples:
  hmu-diag analyze models_zoo/demo/digits_mlp.safetensors -o reports/demo
  hmu-diag analyze model.pt --conv slices          # conv layers as WeightWatcher's pooled kernel slices
  hmu-diag analyze ckpts/ --format parquet -o out  # every checkpoint in a directory, one model each
  hmu-diag analyze big.safetensors.index.json -j 2 --cache-dir .cache/hmu   # parallel, resumable
  hmu-diag analyze zoo/ --executor dask --scheduler tcp://127.0.0.1:8786      # one task per layer on Dask
  hmu-diag analyze model.pt --n-boot 100 --layers 'attn|mlp'   # p-values, only the matching layers
  hmu-diag analyze lightning.ckpt --stub-pickle    # pickled objects that need code become inert placeholders
  hmu-diag analyze untrusted.pt --trust-pickle     # only for files whose code you trust
"""

TABLE_COLUMNS = ["model", "layer", "kind", "shape", "alpha", "D", "num_pl_spikes", "htmp_kappa", "phase", "warning",
                 "status"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``analyze``."""
    p = subparsers.add_parser("analyze", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, *.safetensors.index.json, "
                                "TorchScript) or a directory of checkpoints")
    p.add_argument("-o", "--outdir", default="reports/latest", help="output folder (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="per-layer table format (default: %(default)s)")
    p.add_argument("--conv", choices=CONV_MODES, default="flat",
                   help="conv kernels as one out × in·k matrix (flat, default) or as WeightWatcher's pooled "
                        "per-position in × out slices (slices)")
    p.add_argument("--min-evals", type=int, default=10, metavar="N",
                   help="skip matrices with fewer than N eigenvalues (default: %(default)s)")
    p.add_argument("--layers", metavar="REGEX",
                   help="analyse only the layers whose name matches REGEX (Python re.search), e.g. 'attn' or "
                        "'^h\\.(0|11)\\.'; the others are listed as 'skipped: not selected' (default: every layer)")
    p.add_argument("--dtype", choices=ESD_DTYPES, default="float64",
                   help="precision of the eigenvalues (default: %(default)s; float32 is faster)")
    p.add_argument("--device", default="cpu", help="torch device for eigenvalues, e.g. cuda (default: %(default)s)")
    p.add_argument("--no-htmp", dest="htmp", action="store_false", help="skip the MP and HTMP fits")
    p.add_argument("--fix-fingers", choices=FIX_FINGERS, default=None,
                   help="WeightWatcher's corrections for outlier 'fingers' in the tail (default: none)")
    p.add_argument("--n-boot", type=int, default=0, metavar="N",
                   help="also a goodness-of-fit p_value for each power-law fit, from N bootstrap replicates "
                        "(Clauset-Shalizi-Newman; p < 0.1 rejects the power law; 100 give p to about +-0.05 at "
                        "N more fits per layer; default: %(default)s = not computed)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default: %(default)s)")
    p.add_argument("--htmp-orientation", choices=HTMP_ORIENTATIONS, default="auto",
                   help="HTMP fit of the eigenvalues (direct), of their inverses (inverse) or whichever fits better "
                        "by KS distance (auto, default)")
    p.add_argument("--spectrum", choices=SPECTRUM_MODES, default="exact",
                   help="every eigenvalue (exact, default), or for very large matrices (e.g. 50000 x 4096 "
                        "embeddings) only the top --top-k by randomized block Krylov, doubled until the power-law "
                        "tail fits inside them (approx: alpha to ~1e-2, bulk columns NaN)")
    p.add_argument("--top-k", type=int, default=128, metavar="K",
                   help="starting number of top eigenvalues for --spectrum approx (default: %(default)s)")
    add_execution_options(p)
    add_pickle_options(p)
    return p


def print_table(layers: pd.DataFrame, stream=None) -> None:
    """A readable table of the analysed layers on ``stream``, then one line per skip reason with its count, and
    one per reason an analysed layer has no (or a partial) HTMP fit."""
    import pandas as pd
    stream = stream or sys.stdout
    cols = [c for c in TABLE_COLUMNS if c in layers]
    if "esd_method" in layers and layers["esd_method"].dropna().ne("exact").any():   # say which ESDs are partial
        cols.insert(cols.index("alpha"), "esd_method")
    if "p_value" in layers and layers["p_value"].notna().any():                 # computed on request (--n-boot)
        cols.insert(cols.index("D") + 1, "p_value")
    if layers["model"].nunique() <= 1:
        cols.remove("model")
    skipped = layers["status"].astype(str).str.startswith("skipped")
    with pd.option_context("display.max_rows", 500, "display.width", 160, "display.max_colwidth", 40):
        print(layers.loc[~skipped, cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"), file=stream)
    files = layers["kind"].eq("file")                   # whole checkpoint files of a folder that were not read
    for what, rows in (("tensor(s)", skipped & ~files), ("file(s)", skipped & files)):
        for reason, count in layers.loc[rows, "status"].value_counts().items():
            print(f"  {count} {what} {reason}", file=stream)
    if "htmp_status" in layers:                         # analysed layers whose HTMP columns are NaN or partial
        htmp_status = layers.loc[~skipped, "htmp_status"].dropna().astype(str)
        for reason, count in htmp_status[htmp_status.ne("ok")].value_counts().items():
            print(f"  {count} layer(s) HTMP {reason}", file=stream)


def run(args: argparse.Namespace) -> int:
    """Analyse, write the tables, print a summary."""
    from ..output import write_layers, write_summary
    from ..pipeline import analyze
    from ..summary import summarize
    layers = analyze(args.path, conv=args.conv, min_evals=args.min_evals, layers=args.layers, dtype=args.dtype,
                     device=args.device, htmp=args.htmp, htmp_orientation=args.htmp_orientation,
                     fix_fingers=args.fix_fingers, n_boot=args.n_boot, seed=args.seed, spectrum=args.spectrum,
                     top_k=args.top_k, trust_pickle=args.trust_pickle, progress=sys.stderr.isatty(),
                     **execution_kwargs(args))
    table = write_layers(layers, args.outdir, args.format)
    summary = summarize(layers)
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    summary_path = write_summary(summary, args.outdir, extra={"options": options})
    print_table(layers)
    print(f"\nwrote {table} and {summary_path}")
    return 0
