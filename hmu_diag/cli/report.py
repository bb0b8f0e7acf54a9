"""``hmu-diag report``: one self-contained HTML page (plots embedded) plus CSV tables for a checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._execution import add_pickle_options
from ..choices import CONV_MODES, ESD_DTYPES, TABLE_SUFFIXES

HELP = "write a self-contained HTML report: per-layer spectra with their fits, alpha/kappa by depth, summary"

EPILOG = """\
what it writes (OUTDIR):
  report.html   one file, no external assets (figures are embedded PNGs); open it in any browser
  layers.csv    the per-layer table behind it

the page shows, per model: the summary and warnings in plain words; alpha (with the band a random matrix of the
same shape gives) and HTMP kappa by depth; the layer table; and for every analysed layer its ESD on log-log axes
with the fitted power law (from x_min), the Marchenko-Pastur and the HTMP densities.

examples:
  hmu-diag report models_zoo/demo/digits_mlp.safetensors -o reports/demo
  hmu-diag report model.pt --conv slices -o reports/model
  hmu-diag report reports/demo/layers.csv -o reports/again   # from a saved table: no ESD figures
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``report``."""
    p = subparsers.add_parser("report", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="checkpoint, folder of checkpoints, or a layers.csv written by 'hmu-diag analyze'")
    p.add_argument("-o", "--outdir", default=None, help="output folder (default: reports/<name of PATH>)")
    p.add_argument("--title", default=None, help="page title (default: 'hmu-diag report: <name>')")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the random-matrix baseline of alpha")
    p.add_argument("--conv", choices=CONV_MODES, default="flat", help="conv layer view (see 'hmu-diag analyze')")
    p.add_argument("--min-evals", type=int, default=10, metavar="N", help="skip matrices with fewer eigenvalues")
    p.add_argument("--dtype", choices=ESD_DTYPES, default="float64", help="precision of the eigenvalues")
    p.add_argument("--no-htmp", dest="htmp", action="store_false", help="skip the MP and HTMP fits")
    p.add_argument("--device", default="cpu", help="torch device for eigenvalues (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default: %(default)s)")
    add_pickle_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Analyse (or read the table), add the baseline, write the page."""
    from ..baseline import add_random_baseline
    from ..pipeline import analyze
    from ..rank import read_layers
    from ..report import write_report

    name = Path(args.path.rstrip("/")).name.split(".")[0] or "report"
    outdir = Path(args.outdir or Path("reports") / name)
    options = dict(conv=args.conv, min_evals=args.min_evals, dtype=args.dtype, device=args.device, htmp=args.htmp,
                   seed=args.seed)
    from_table = Path(args.path).suffix in TABLE_SUFFIXES and Path(args.path).is_file()
    if from_table:
        layers = read_layers(args.path)
    else:
        layers = analyze(args.path, trust_pickle=args.trust_pickle, progress=sys.stderr.isatty(), **options)
    if args.baseline and "alpha_random" not in layers:
        layers = add_random_baseline(layers, seed=args.seed)
    source = None if from_table else args.path
    path = write_report(layers, outdir, title=args.title or f"hmu-diag report: {name}", source=source,
                        trust_pickle=args.trust_pickle, **options)
    print(f"wrote {path} and {outdir / 'layers.csv'}")
    return 0
