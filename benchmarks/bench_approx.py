"""Approximate top-k eigenvalues (randomized block Krylov) against the exact ESD on a large matrix.

Matrix: N x M Student-t(3) entries / sqrt(N) in float32 (heavy-tailed ESD, like a trained layer's tail above an MP
bulk); default 20000 x 2048.  Runs, each timed (best of ``--repeat``):

* exact   — ``hmu_diag.spectra.weights.weight_spectrum`` (blocked Gram WᵀW + LAPACK syevd), float64 and float32;
* svd     — ``scipy.linalg.svd(W, compute_uv=False)`` in float64, WeightWatcher 0.7.7's eigenvalue path (``--svd``);
* approx  — ``approx_top_eigenvalues(W, k)`` (float32) for each ``--k``.

Errors against the exact float64 spectrum: relative error of the largest eigenvalue, of the k-th, and the maximum;
and the power-law fit (``hmu_diag.fit_power_law``) on the approximate top k against the fit on all M eigenvalues:
Δα, and whether the exact x_min lies inside the top k (the condition under which the two fits agree, see the
:mod:`hmu_diag.spectra.approx` docstring).

``--analyze`` adds the whole per-layer row: ``analyze(spectrum="approx")`` against the exact float64 ``analyze()``.

Measured (50257 x 4096, 2 threads, after the exact path moved to BLAS syrk + LAPACK syevd): exact float64 18.5 s,
float32 8.5 s; top-64 Krylov (float32) 10.3 s with relative error 1e-7 at the top and 1.5e-2 at the 64th value.  This
Student-t matrix has a long tail (n_tail 549 of 4096), so a top-k fit cannot hold it: ``analyze(spectrum="approx")``
doubled k until the exact ESD was the cheaper choice and returned it (``esd_method`` "exact", 9.2 s in float32,
|Δα| 1.2e-4 from float64).  The Krylov path pays only for short tails (k ≤ ~80 at M = 4096); with the tail inside the
top k its fit equals the exact one (tests/test_approx.py), and on 20000 x 4096 top-64 gave |Δα| = 0.028.

    OMP_NUM_THREADS=1 python benchmarks/bench_approx.py --rows 20000 --cols 2048 --k 64 256
    python benchmarks/bench_approx.py --rows 50257 --cols 4096 --k 128 --analyze
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from _common import timed  # this folder is sys.path[0] when run as a script
from hmu_diag import analyze
from hmu_diag.fits.powerlaw import fit_power_law
from hmu_diag.spectra.approx import approx_top_eigenvalues
from hmu_diag.spectra.weights import weight_spectrum



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--k", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--n-iter", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--svd", action="store_true", help="also time scipy's float64 SVD (WeightWatcher's path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--analyze", action="store_true",
                        help="also compare analyze(spectrum='approx') with the exact analyze() of the matrix")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    w = torch.from_numpy((rng.standard_t(3, size=(args.rows, args.cols)) / math.sqrt(args.rows)).astype(np.float32))
    print(f"W: {args.rows} x {args.cols} float32 ({w.numel() * 4 / 2**20:.0f} MiB), Student-t(3), "
          f"{torch.get_num_threads()} thread(s) "
          f"(OMP_NUM_THREADS sets them for torch and BLAS alike)")

    t64, exact = timed(args.repeat, lambda: weight_spectrum(w, dtype="float64").evals)
    t32, exact32 = timed(args.repeat, lambda: weight_spectrum(w, dtype="float32").evals)
    full = fit_power_law(exact)
    print(f"{'run':34s} {'seconds':>8s} {'vs exact f64':>12s} {'top rel err':>12s} {'k-th rel err':>12s} "
          f"{'max rel err':>12s} {'alpha':>8s} {'d alpha':>9s}")
    print(f"{'exact float64 (Gram + syevd)':34s} {t64:8.2f} {1.0:12.2f} {'-':>12s} {'-':>12s} {'-':>12s} "
          f"{full.alpha:8.4f} {'-':>9s}")
    top32 = exact32[-args.k[-1]:]
    err32 = np.abs(top32 - exact[-args.k[-1]:]) / exact[-args.k[-1]:]
    print(f"{'exact float32 (Gram + syevd)':34s} {t32:8.2f} {t64 / t32:12.2f} {err32[-1]:12.1e} {err32[0]:12.1e} "
          f"{err32.max():12.1e} {fit_power_law(exact32).alpha:8.4f} {fit_power_law(exact32).alpha - full.alpha:9.1e}")
    if args.svd:
        import scipy.linalg
        w64 = w.double().numpy()
        tsvd, _ = timed(args.repeat, lambda: scipy.linalg.svd(w64, compute_uv=False))
        print(f"{'scipy svd float64 (WeightWatcher)':34s} {tsvd:8.2f} {t64 / tsvd:12.2f}")
    for k in args.k:
        t, approx = timed(args.repeat, lambda: approx_top_eigenvalues(w, k, n_iter=args.n_iter))
        err = np.abs(approx - exact[-k:]) / exact[-k:]
        fit = fit_power_law(approx)
        inside = "inside" if full.n_tail <= k else "OUTSIDE"
        print(f"{f'approx top-{k} (n_iter={args.n_iter}, float32)':34s} {t:8.2f} {t64 / t:12.2f} {err[-1]:12.1e} "
              f"{err[0]:12.1e} {err.max():12.1e} {fit.alpha:8.4f} {fit.alpha - full.alpha:9.1e}"
              f"   exact x_min {inside} the top {k} (n_tail {full.n_tail})")
    if args.analyze:
        compare_analyze(w, args.repeat)
    return 0


def compare_analyze(w: torch.Tensor, repeat: int) -> None:
    """The whole per-layer row: analyze(spectrum="approx") (k doubled until the tail fits inside) against the exact
    float64 analyze() of the same matrix, as an embedding (WeightWatcher 0.7.7 skips embeddings with N > 50,000)."""
    source = {"embed_tokens.weight": w}
    t_exact, exact = timed(repeat, lambda: analyze(source, htmp=False).iloc[0])
    print(f"\nanalyze() of the matrix as an embedding ({exact['kind']}), htmp off:")
    print(f"  exact float64                         {t_exact:8.2f} s   alpha {exact['alpha']:.4f}  "
          f"n_tail {exact['num_pl_spikes']}")
    for dtype in ("float64", "float32"):
        t, row = timed(repeat, lambda: analyze(source, htmp=False, spectrum="approx", dtype=dtype).iloc[0])
        print(f"  spectrum=approx {dtype} ({row['esd_method']:>24s}) {t:8.2f} s   {t_exact / t:5.2f}x faster, "
              f"|d alpha| = {abs(row['alpha'] - exact['alpha']):.1e}, d lambda_max/lambda_max = "
              f"{abs(row['lambda_max'] / exact['lambda_max'] - 1):.1e}, d log_norm = "
              f"{abs(row['log_norm'] - exact['log_norm']):.1e}")


if __name__ == "__main__":
    sys.exit(main())
