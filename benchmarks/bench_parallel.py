"""Speed-up of per-layer parallelism: ``run_tasks(executor="local", n_jobs=2)`` against the serial executor.

Model: a GPT-2-shaped stack of random heavy-tailed layers (blocks x {d x 3d qkv (split into q/k/v by the walker),
d x d proj, 4d x d fc, d x 4d proj}, d = ``--width``, default 768 as in GPT-2 small; Student-t(4) entries), each layer analysed by the pipeline's own per-layer function
(``hmu_diag.pipeline.analyze_layer``: exact ESD + power-law fit + metrics).  Runs:

* serial, torch/BLAS limited to 1 thread  (the baseline a worker gets);
* serial, 2 threads                        (intra-op parallelism only — the fair single-process competitor);
* local process pool, n_jobs = 1 and 2     (1 thread per worker: n_jobs x threads <= cores; n_jobs = 1 shows the
                                           pool's overhead).

Every run's rows are compared with the serial 1-thread rows and the largest relative difference is printed.  Runs
with 1 thread per task must agree to 1e-12 (measured: identical, or ~1e-14 where MKL picks an alignment-dependent
kernel in another process); the 2-thread run differs by rounding amplified through the fits (BLAS sums in another
order; measured ~1e-6 on α).  Times are wall clock, best of ``--repeat``, pool start-up included.  On a
shared 2-core VM the ratios are noisy.  Measured (2 cores, htmp on, --blocks 12: 72 layers): serial 1 thread 5.95 s,
serial 2 threads 5.22 s, pool n_jobs=2 4.36 s: 1.37x over serial 1 thread and 1.20x over serial 2 threads, rows
identical to the serial run (--blocks 6: 1.34x and 1.05x).  Workers fork from a forkserver that has imported the
pipeline once (``hmu_diag.executors.FORKSERVER_PRELOAD``); before that each pool paid ~3 s of imports per worker and
n_jobs=2 was 2x slower than serial on this size.

    OMP_NUM_THREADS=1 python benchmarks/bench_parallel.py --blocks 4 --width 768
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys

import numpy as np
import torch

from _common import timed  # this folder is sys.path[0] when run as a script
from hmu_diag.executors import available_cores, limit_threads, run_tasks
from hmu_diag.pipeline import AnalyzeOptions, analyze_layer
from hmu_diag.walk import walk

SHAPES = {"attn.c_attn.weight": (1, 3), "attn.c_proj.weight": (1, 1), "mlp.c_fc.weight": (4, 1),
          "mlp.c_proj.weight": (1, 4)}  # in units of the width d


def layer_row(task: tuple) -> dict:
    """One task = (model name, LayerMatrix, AnalyzeOptions) -> the layer's row."""
    return analyze_layer(*task)


def make_tasks(blocks: int, width: int, seed: int, options: AnalyzeOptions) -> list[tuple]:
    from hmu_diag.load import iter_tensors
    rng = np.random.default_rng(seed)
    state = {f"h.{b}.{name}": torch.from_numpy(rng.standard_t(4, size=(r * width, c * width)).astype(np.float32)
                                               / math.sqrt(c * width))
             for b in range(blocks) for name, (r, c) in SHAPES.items()}
    return [("gpt2-shaped", lm, options) for lm in walk(iter_tensors(state), conv=options.conv,
                                                        min_evals=options.min_evals)]


def max_difference(a: list[dict], b: list[dict]) -> float:
    """Largest relative difference between the numeric cells of two row lists (0.0: bit-identical; inf: the
    structure or a non-numeric cell differs; NaN equal to NaN)."""
    if len(a) != len(b) or any(r.keys() != s.keys() for r, s in zip(a, b)):
        return math.inf
    worst = 0.0
    for r, s in zip(a, b):
        for key, x in r.items():
            y = s[key]
            if isinstance(x, float) and isinstance(y, float):
                if math.isnan(x) and math.isnan(y) or x == y:
                    continue
                worst = max(worst, abs(x - y) / max(abs(x), abs(y)) if math.isfinite(x - y) else math.inf)
            elif x != y:
                return math.inf
    return worst



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=6, help="transformer blocks (4 layers each)")
    parser.add_argument("--width", type=int, default=768, help="hidden size d")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    htmp = importlib.util.find_spec("hmu_diag.htmp_metrics") is not None
    options = AnalyzeOptions(htmp=htmp)
    tasks = make_tasks(args.blocks, args.width, args.seed, options)
    print(f"{len(tasks)} layers, width {args.width}, {available_cores()} cores, htmp={htmp}")

    limit_threads(1)                 # torch, MKL and OpenBLAS (scipy's syrk/syevd) alike
    t_serial1, reference = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="serial"))
    times, differences = {"serial, 1 thread": t_serial1}, {}
    for n_jobs in (1, 2):
        name = f"local n_jobs={n_jobs}, 1 thread each"
        times[name], rows = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="local", n_jobs=n_jobs,
                                                                   threads_per_worker=1))
        differences[name] = max_difference(rows, reference)
    limit_threads(2)
    times["serial, 2 threads"], rows = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="serial"))
    differences["serial, 2 threads"] = max_difference(rows, reference)
    limit_threads(1)

    print(f"{'run':32s} {'seconds':>8s} {'speed-up':>9s}  rows vs serial 1 thread")
    for name, seconds in times.items():
        diff = differences.get(name, 0.0)
        same = "identical" if diff == 0.0 else f"max relative difference {diff:.1e}"
        print(f"{name:32s} {seconds:8.2f} {t_serial1 / seconds:8.2f}x  {same}")
    two = times["local n_jobs=2, 1 thread each"]
    print(f"local n_jobs=2 vs serial 2 threads: {times['serial, 2 threads'] / two:.2f}x")
    return 0 if all(d <= 1e-12 for name, d in differences.items() if "1 thread" in name) else 1


if __name__ == "__main__":
    sys.exit(main())
