"""Command-line interface: ``hmu-diag <command> ...``.  Argument parsing only; every command calls the public API.

Each command lives in ``hmu_diag/cli/<command>.py`` with ``add_parser(subparsers)`` and ``run(args) -> int``.
Building the parser imports no heavy library (option choices come from :mod:`hmu_diag.choices`; torch, pandas and
scipy are imported inside ``run``), so ``--help`` and argument errors answer in ~0.1 s instead of seconds.
Bad input ends with one line ``hmu-diag: error: <what and where>`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..errors import HmuDiagError

COMMANDS = ("analyze", "rank", "compare", "report", "jacobian", "hessian")

DESCRIPTION = """\
Audit trained neural networks from the spectra of their matrices, without test data.

Each weight matrix's empirical spectral density (eigenvalues of WᵀW) is fitted to a power law (its tail exponent
alpha tracks training quality: ~2-4 well trained, >6 under-trained, <2 over-trained), to the Marchenko-Pastur law
(random matrix) and to the high-temperature MP (HTMP) family, whose repulsion kappa explains heavy tails.
"""

EPILOG = """\
examples:
  hmu-diag analyze models_zoo/demo/digits_mlp.safetensors -o reports/demo
  hmu-diag analyze checkpoint.pt --conv slices --format json -o out/
  hmu-diag analyze shards/model.safetensors.index.json --dtype float32
  hmu-diag rank models_zoo/digits/batch_size --manifest models_zoo/digits/batch_size/manifest.json -o out/rank
  hmu-diag compare a.safetensors b.safetensors
  hmu-diag report models_zoo/demo/digits_mlp.safetensors -o reports/demo_report
  hmu-diag jacobian --model models_zoo.mtcnn_onet:onet --data sklearn:sample_images
  hmu-diag hessian --model models_zoo.mtcnn_onet:onet --data sklearn:sample_images --loss nll --labels argmax --output 2

Run 'hmu-diag <command> --help' for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="hmu-diag", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hmu-diag`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():              # a user-facing warning is one line too, not a source location
            warnings.showwarning = _one_line_warning
            return int(args.run(args) or 0)
    except HmuDiagError as exc:
        print(f"hmu-diag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hmu-diag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the output went to a command that stopped reading (``| head``): the files are written, nothing to report;
        # point stdout at /dev/null so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the CLI: ``hmu-diag: warning: <message>`` on stderr."""
    print(f"hmu-diag: warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
