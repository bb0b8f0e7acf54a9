"""Cost of the MP + HTMP fits of one layer against the eigendecomposition of the same layer (same run).

For 768 x 3072 (gamma = 0.25) and 768 x 768 (gamma = 1) float64 matrices with a white (MP), spiked, and heavy-tailed
(HTMP kappa = 1.9) spectrum, prints the median wall time of

* ``eigvalsh``: numpy.linalg.eigvalsh of the 768 x 768 Gram W W^T (the layer's spectrum; Gram product excluded),
* ``fit_mp``, ``fit(direct)``, ``fit(auto)`` (both orientations, the default of ``htmp_metrics``),
* ``htmp_metrics`` (all columns: both fits, the power-law fit of 1/lambda and the phase),

and each as a ratio of the eigvalsh time (steps interleaved, medians of ``repeats`` rounds).  Then a size sweep
(m x 4m, kappa 1.9, m = 32 .. 2048): all HTMP + MP columns against hmu-diag's whole spectrum step of the layer (Gram
product included), for the layer alone and per layer in a batch of ``BATCH`` such layers fitted together
(``htmp_metrics_many``, as a serial analyze() does), which shows the layer size above which they stay within 10%.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_htmp_fit.py``.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from hmu_diag import htmp
from hmu_diag.fits.htmp import fit
from hmu_diag.fits.mp import fit_mp
from hmu_diag.htmp_metrics import htmp_metrics, htmp_metrics_many

BATCH = 16


def _median_times(steps: dict, repeats: int) -> dict:
    """Median wall time of each step; the steps are interleaved so that machine load affects them alike."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def _layer(kind: str, m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """An m x n matrix with a white, spiked or HTMP(kappa=1.9) spectrum (Haar singular vectors)."""
    w = rng.standard_normal((m, n)) / np.sqrt(n)
    if kind == "white":
        return w
    if kind == "spiked":
        u, v = rng.standard_normal((m, 3)), rng.standard_normal((3, n))
        return w + (u * np.array([3.0, 2.0, 1.5])) @ v / np.sqrt(m * n) * 2
    lam = htmp.sample(m, m / n, 1.9, 1.0, rng=rng)
    q1, _ = np.linalg.qr(rng.standard_normal((m, m)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, m)))
    return (q1 * np.sqrt(lam)) @ q2.T


def main(repeats: int = 7) -> None:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    print(f"{'layer':<22}{'step':<16}{'ms':>9}{'x eigvalsh':>12}")
    for m, n in ((768, 3072), (768, 768)):
        g = m / n
        for kind in ("white", "spiked", "htmp1.9"):
            w = _layer(kind, m, n, rng)
            gram = w @ w.T
            ev = np.linalg.eigvalsh(gram)
            fit(ev, g), htmp_metrics(ev, g, alpha=3.0)            # warm caches once
            steps = {
                "eigvalsh": lambda: np.linalg.eigvalsh(gram),
                "fit_mp": lambda: fit_mp(ev, g),
                "fit(direct)": lambda: fit(ev, g, "direct"),
                "fit(auto)": lambda: fit(ev, g, "auto"),
                "htmp_metrics": lambda: htmp_metrics(ev, g, alpha=3.0),
            }
            times = _median_times(steps, repeats)
            for name, t in times.items():
                print(f"{f'{m}x{n} {kind}':<22}{name:<16}{t * 1e3:9.2f}{t / times['eigvalsh']:12.3f}")
            res = fit(ev, g)
            print(f"{'':<22}-> kappa={res.kappa:.3g} [{res.kappa_lo:.3g}, {res.kappa_hi:.3g}] {res.orientation}, "
                  f"phase={htmp_metrics(ev, g, alpha=3.0)['phase']}")


def size_sweep(repeats: int = 7) -> None:
    """The HTMP + MP columns' cost against the layer's whole spectrum step (hmu-diag's Gram + eigensolver) as the
    layer grows: where the 10% budget holds.  HTMP(kappa = 1.9) layers of shape m x 4m; every step interleaved."""
    import torch

    from hmu_diag.spectra.weights import weight_spectrum
    rng = np.random.default_rng(1)
    print(f"\n{'m x 4m (kappa 1.9)':<22}{'spectrum ms':>12}{'HTMP+MP ms':>12}{'ratio':>8}"
          f"{f'in a batch of {BATCH}: ms/layer':>30}{'ratio':>8}")
    for m in (32, 64, 128, 256, 512, 768, 1024, 2048):
        w = torch.from_numpy(_layer("htmp1.9", m, 4 * m, rng))
        spec = weight_spectrum(w)
        ev = spec.nonzero
        htmp_metrics(ev, 0.25, alpha=3.0)                               # warm the per-shape caches once
        times = _median_times({"spectrum": lambda: weight_spectrum(w),
                               "htmp": lambda: htmp_metrics(ev, 0.25, alpha=3.0),
                               "batch": lambda: htmp_metrics_many([ev] * BATCH, [0.25] * BATCH,
                                                                  alphas=[3.0] * BATCH)}, repeats)
        per_layer = times["batch"] / BATCH
        print(f"{f'{m} x {4 * m}':<22}{times['spectrum'] * 1e3:12.2f}{times['htmp'] * 1e3:12.2f}"
              f"{times['htmp'] / times['spectrum']:8.2f}{per_layer * 1e3:30.2f}{per_layer / times['spectrum']:8.2f}")


if __name__ == "__main__":
    main()
    size_sweep()
