"""``hmu-diag jacobian``: input-output (and per-block) Jacobian spectra of a model at some inputs."""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._execution import add_pickle_options
from ..choices import BUILTINS
from ..errors import HmuDiagError, OptionError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ..data import Dataset

HELP = "singular values of the input-output Jacobian (and per-block Jacobians) at sample inputs, power-law fitted"

EPILOG = """\
The model is 'package.module:factory' (imported from the current directory too) with an optional --checkpoint,
or a TorchScript archive.  Each input is one sample (the model sees a batch of one); the ESD is lambda = s^2 of
J = d f(x) / d x, pooled over the inputs.

what it writes:
  OUTDIR/jacobian.csv   rows in the weights-table format, source = jacobian (pooled; + one per input with
                        --per-input) and layer_jacobian (one per block with --layers); extra columns s_max, s_min,
                        mean_s2 (1 = criticality), method (exact = jacrev/jacfwd + svdvals, lanczos = top-k matrix-free)

examples:
  hmu-diag jacobian --model models_zoo.mtcnn_onet:onet --data sklearn:sample_images --n-samples 8 -o out/
  hmu-diag jacobian --model mypkg.nets:mlp --checkpoint mlp.safetensors --data sklearn:digits --layers
  hmu-diag jacobian --model net.pt --data inputs.npz --method lanczos --k 50 --dtype float64
  hmu-diag jacobian --model models_zoo.mtcnn_onet:onet --data sklearn:sample_images --layers dense5,prelu5
"""

TABLE_COLUMNS = ["source", "layer", "kind", "shape", "method", "num_evals", "lambda_max", "mean_s2", "alpha", "D",
                 "num_pl_spikes", "status"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``jacobian`` and ``hessian``: model, weights, data, precision, device, seed, output."""
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="'package.module:factory', 'file.py:factory' or a TorchScript archive path")
    p.add_argument("--checkpoint", metavar="PATH", help="weights for the factory's model (any format hmu-diag reads)")
    p.add_argument("--data", required=True, metavar="PATH_OR_BUILTIN",
                   help=f".npz/.pt file with x (and y), or a builtin: {', '.join(BUILTINS)}")
    p.add_argument("--n-samples", type=int, default=None, metavar="N",
                   help="use a seeded random subset of N samples (default: all)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="reshape each sample, e.g. 1,8,8 for a CNN on sklearn:digits")
    p.add_argument("-o", "--outdir", default="reports/latest", help="output folder (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="precision of the derivatives (default: %(default)s; float64 for validation)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default: %(default)s)")
    add_pickle_options(p)


def load_inputs(args: argparse.Namespace) -> Dataset:
    """The --data inputs (and targets), shaped by --input-shape."""
    from ..data import load_data
    shape = None
    if args.input_shape:
        try:
            shape = [int(s) for s in args.input_shape.split(",")]
        except ValueError:
            raise OptionError(f"--input-shape {args.input_shape!r}: expected integers separated by commas") from None
    return load_data(args.data, n=args.n_samples, shape=shape, seed=args.seed)


def forward_error(model: nn.Module, data: Dataset) -> str | None:
    """Why one forward pass of ``model`` (eval mode, no grad) on the first input fails, as "<Error>: <message>", or
    None when it runs.  The input is cast to the model's floating dtype, as the spectrum functions do."""
    import torch

    from ..model_io import eval_mode
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    x = data.inputs[:1].to(floats[0]) if floats else data.inputs[:1]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    except Exception as exc:          # the model's own code: any error means these inputs do not fit it
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@contextlib.contextmanager
def model_errors_explained(args: argparse.Namespace, model: nn.Module, data: Dataset) -> Iterator[None]:
    """Turn a failure inside the spectrum computation into one line when its cause is that the model cannot run on
    the --data inputs (wrong shape or type); any other error propagates unchanged.  Costs nothing unless it fails."""
    try:
        yield
    except HmuDiagError:
        raise
    except Exception:
        why = forward_error(model, data)
        if why is None:
            raise
        raise OptionError(f"--model {args.model}: its forward pass fails on --data {data.name} (one input has shape "
                          f"{tuple(data.inputs.shape[1:])}): {why}; reshape the inputs with --input-shape") from None


def print_table(df: pd.DataFrame, columns: list[str], stream=None) -> None:
    """The chosen columns of ``df`` as a plain-text table on ``stream`` (default: the current sys.stdout)."""
    import pandas as pd
    cols = [c for c in columns if c in df]
    with pd.option_context("display.max_rows", 200, "display.width", 180, "display.max_colwidth", 40):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), file=stream or sys.stdout)


def write_csv(df: pd.DataFrame, outdir: str, name: str) -> Path:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / name, index=False)
    return out / name


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``jacobian``."""
    p = subparsers.add_parser("jacobian", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--method", choices=("auto", "exact", "lanczos"), default="auto",
                   help="exact dense J + svdvals, or matrix-free Lanczos top-k; auto switches on J's size")
    p.add_argument("--k", type=int, default=20, help="singular values per input on the Lanczos path (default: 20)")
    p.add_argument("--output", type=int, default=None, metavar="INDEX",
                   help="differentiate only this element of a tuple output (default: all, concatenated)")
    p.add_argument("--per-input", action="store_true", help="also one row per input")
    p.add_argument("--layers", nargs="?", const="", default=None, metavar="NAMES",
                   help="also per-block Jacobians: the top-level children (no value) or comma-separated module names")
    return p


def run(args: argparse.Namespace) -> int:
    """Compute, write OUTDIR/jacobian.csv, print the table."""
    import pandas as pd

    from ..model_io import load_model
    from ..spectra.jacobian import jacobian_spectrum, layer_jacobian_spectra
    model = load_model(args.model, args.checkpoint, trust_pickle=args.trust_pickle)
    data = load_inputs(args)
    name = Path(args.model).name if Path(args.model).is_file() else args.model
    common = dict(method=args.method, k=args.k, device=args.device, dtype=args.dtype, seed=args.seed)
    with model_errors_explained(args, model, data):
        spec = jacobian_spectrum(model, data.inputs, output=args.output, per_input=args.per_input, **common)
        frames = [spec.to_frame(name)]
        if args.layers is not None:
            layers = [s for s in args.layers.split(",") if s] or None
            frames.append(layer_jacobian_spectra(model, data.inputs, layers=layers, **common).to_frame(name))
    df = pd.concat(frames, ignore_index=True)
    path = write_csv(df, args.outdir, "jacobian.csv")
    print_table(df, TABLE_COLUMNS)
    print(f"\n{len(data)} inputs from {data.name}; wrote {path}")
    return 0
