"""Speed of hmu_diag.fits.fit_power_law against powerlaw 2.0.0 (and WeightWatcher 0.7.7's WWFit), same run.

For n = 1k, 4k, 16k and two kinds of data (a Pareto sample, alpha = 2.5, and an ESD: the pooled eigenvalues
of W^T W for n/500 Student-t(3) matrices of 1000 x 500, like the pooled slices of a conv layer), prints the best-of-r wall time of ours and of the reference, their ratio, and whether
the results agree (x_min identical, alpha and D to 1e-10 relative).  powerlaw at 16k takes several seconds
per fit, so it runs once there.  Also times a 768-eigenvalue layer against its own eigendecomposition.

    OMP_NUM_THREADS=1 python benchmarks/bench_powerlaw.py [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import warnings

import numpy as np

from _common import timed  # this folder is sys.path[0] when run as a script
from hmu_diag.fits.powerlaw import fit_power_law, fit_power_law_ww



def datasets(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    W = rng.standard_t(3, (n // 500, 1000, 500))
    return {"pareto2.5": rng.pareto(1.5, n) + 1.0, "esd_t3": np.linalg.eigvalsh(W.transpose(0, 2, 1) @ W).ravel()}


def agree(a, b_xmin, b_alpha, b_D) -> bool:
    return bool(a.xmin == b_xmin and abs(a.alpha - b_alpha) <= 1e-10 * abs(b_alpha) and abs(a.D - b_D) <= 1e-10 * b_D)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1k and 4k only")
    args = ap.parse_args()
    import powerlaw
    from weightwatcher.WW_powerlaw import WWFit

    sizes = (1000, 4000) if args.quick else (1000, 4000, 16000)
    print(f"{'data':10s} {'n':>6s} {'ours ms':>9s} {'powerlaw s':>11s} {'ratio':>7s} {'agree':>6s}"
          f" {'ours-ww ms':>10s} {'WWFit s':>8s} {'ratio':>7s} {'agree':>6s}")
    for n in sizes:
        for name, x in datasets(n).items():
            reps_ref = 1 if n >= 16000 else 3
            t_ours, ours = timed(10, lambda: fit_power_law(x))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_ref, ref = timed(reps_ref, lambda: powerlaw.Fit(x, parameter_ranges={"alpha": [1, 50]}, verbose=0))
            t_ww_ours, ours_ww = timed(10, lambda: fit_power_law_ww(x))
            with contextlib.redirect_stdout(io.StringIO()):
                t_ww, ww = timed(reps_ref, lambda: WWFit(x))
            print(f"{name:10s} {n:6d} {t_ours * 1e3:9.2f} {t_ref:11.3f} {t_ref / t_ours:7.0f} "
                  f"{str(agree(ours, ref.xmin, ref.alpha, ref.D)):>6s} {t_ww_ours * 1e3:10.2f} {t_ww:8.3f} "
                  f"{t_ww / t_ww_ours:7.0f} {str(agree(ours_ww, ww.xmin, ww.alpha, ww.D)):>6s}")

    # one 768 x 3072 layer: the fit against the eigendecomposition that produces its ESD
    W = np.random.default_rng(0).standard_t(3, (3072, 768))
    t_eig, ev = timed(5, lambda: np.linalg.eigvalsh(W.T @ W))
    t_fit, _ = timed(20, lambda: fit_power_law(ev))
    print(f"768x3072 layer: Gram + eigvalsh {t_eig * 1e3:.1f} ms, fit_power_law {t_fit * 1e3:.2f} ms "
          f"({100 * t_fit / t_eig:.0f}% of the eigendecomposition)")


if __name__ == "__main__":
    main()
