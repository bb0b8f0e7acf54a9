"""Speed-up of per-layer parallelism: ``run_tasks(executor="local", n_jobs=2)`` against the serial executor.

Model: a GPT-2-small-shaped stack of random heavy-tailed layers (blocks x {768x2304 qkv, 768x768 proj, 3072x768 fc,
768x3072 proj}, Student-t(4) entries), each layer analysed by the pipeline's own per-layer function
(``hmu_diag.pipeline.analyze_layer``: exact ESD + power-law fit + metrics).  Runs:

* serial, torch/BLAS limited to 1 thread  (the baseline a worker gets);
* serial, 2 threads                        (intra-op parallelism only — the fair single-process competitor);
* local process pool, n_jobs = 1 and 2     (1 thread per worker: n_jobs x threads <= cores).

Every run's rows are checked equal to the serial rows (NaN equal to NaN) — parallelism must not change a number.
Times are wall clock, best of ``--repeat``, pool start-up included.  On a shared 2-core VM the ratio is noisy.

    OMP_NUM_THREADS=1 python benchmarks/bench_parallel.py --blocks 6
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import numpy as np
import torch

from hmu_diag.executors import available_cores, run_tasks
from hmu_diag.pipeline import AnalyzeOptions, analyze_layer
from hmu_diag.walk import walk

SHAPES = {"attn.c_attn.weight": (768, 2304), "attn.c_proj.weight": (768, 768), "mlp.c_fc.weight": (3072, 768),
          "mlp.c_proj.weight": (768, 3072)}


def layer_row(task: tuple) -> dict:
    """One task = (model name, LayerMatrix, AnalyzeOptions) -> the layer's row."""
    return analyze_layer(*task)


def make_tasks(blocks: int, seed: int, options: AnalyzeOptions) -> list[tuple]:
    from hmu_diag.load import iter_tensors
    rng = np.random.default_rng(seed)
    state = {f"h.{b}.{name}": torch.from_numpy(rng.standard_t(4, size=shape).astype(np.float32) / math.sqrt(shape[1]))
             for b in range(blocks) for name, shape in SHAPES.items()}
    return [("gpt2-shaped", lm, options) for lm in walk(iter_tensors(state), conv=options.conv,
                                                        min_evals=options.min_evals)]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    def eq(x, y):
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return len(a) == len(b) and all(r.keys() == s.keys() and all(eq(r[k], s[k]) for k in r) for r, s in zip(a, b))


def timed(repeat: int, run) -> tuple[float, list]:
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=6, help="transformer blocks (4 layers each)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    htmp = importlib.util.find_spec("hmu_diag.htmp_metrics") is not None
    options = AnalyzeOptions(htmp=htmp)
    tasks = make_tasks(args.blocks, args.seed, options)
    print(f"{len(tasks)} layers, {available_cores()} cores, htmp={htmp}")

    torch.set_num_threads(1)
    t_serial1, reference = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="serial"))
    torch.set_num_threads(2)
    t_serial2, rows = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="serial"))
    torch.set_num_threads(1)
    checks = {"serial, 2 threads": same_rows(rows, reference)}
    t_pool = {}
    for n_jobs in (1, 2):
        t_pool[n_jobs], rows = timed(args.repeat, lambda: run_tasks(layer_row, tasks, executor="local", n_jobs=n_jobs))
        checks[f"local n_jobs={n_jobs}"] = same_rows(rows, reference)

    print(f"{'run':28s} {'seconds':>8s} {'speed-up vs serial/1 thread':>28s}")
    for name, seconds in [("serial, 1 thread", t_serial1), ("serial, 2 threads", t_serial2),
                          ("local n_jobs=1 (1 thread)", t_pool[1]), ("local n_jobs=2 (1 thread each)", t_pool[2])]:
        print(f"{name:28s} {seconds:8.2f} {t_serial1 / seconds:28.2f}")
    print(f"local n_jobs=2 vs serial 2 threads: {t_serial2 / t_pool[2]:.2f}x")
    print("rows identical to serial: " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
