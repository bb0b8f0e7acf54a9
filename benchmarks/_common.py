"""Shared helpers for the benchmark scripts: timing and reference models."""
from __future__ import annotations

import gc
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


def timed(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """(best wall time in seconds of ``repeat`` calls, the last call's result); best-of reduces noise on a shared
    machine."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time in seconds of ``repeat`` calls."""
    return timed(repeat, fn)[0]


def interleaved_times(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, np.ndarray]:
    """Wall times (s) of every function in each of ``rounds`` rounds; each round runs them all once, in an order
    rotated from round to round.  Ratios taken within a round see the same machine load, so their median is far
    steadier on a shared machine than a ratio of best-of times measured minutes apart."""
    names = list(fns)
    times = {name: np.empty(rounds) for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            start = time.perf_counter()
            fns[name]()
            times[name][r] = time.perf_counter() - start
    return times


def ratio_summary(numerator: np.ndarray, denominator: np.ndarray) -> str:
    """"median [quartiles]" of the per-round ratios of two :func:`interleaved_times` series."""
    q1, med, q3 = np.percentile(numerator / denominator, [25, 50, 75])
    return f"{med:5.2f}x [{q1:.2f}-{q3:.2f}]"


_CLEARERS: dict[int, list[Callable[[], None]]] = {}


def _cache_clearers() -> list[Callable[[], None]]:
    """``cache_clear`` of every cache of hmu_diag's modules (functools caches and the like), found once per set of
    imported modules: scanning every module's namespace costs milliseconds, which would enter the timings."""
    loaded = len(sys.modules)
    if loaded not in _CLEARERS:
        _CLEARERS.clear()
        _CLEARERS[loaded] = [value.cache_clear for name, module in list(sys.modules.items())
                             if name.startswith("hmu_diag") for value in vars(module).values()
                             if not isinstance(value, type) and callable(getattr(value, "cache_clear", None))]
    return _CLEARERS[loaded]


def cold(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run after emptying every cache of hmu_diag (HTMP tables, moment-law tables), so that a repeat costs
    what a first analysis of a new model costs, not what re-analysing the same layers costs."""
    def run() -> Any:
        for clear in _cache_clearers():
            clear()
        return fn()
    return run


def gpt2_small_shaped(seed: int = 0) -> nn.Module:
    """12 transformer blocks' worth of GPT-2-small matrices as nn.Linear (85M parameters), random init.

    Per block: 768→2304 (fused attention input), 768→768, 768→3072, 3072→768.  Names are neutral so that no walker
    rule splits the fused matrix: hmu-diag and WeightWatcher see exactly the same 48 matrices.
    """
    torch.manual_seed(seed)
    blocks = nn.ModuleList()
    for _ in range(12):
        blocks.append(nn.ModuleDict({"fa": nn.Linear(768, 2304), "fb": nn.Linear(768, 768),
                                     "fc": nn.Linear(768, 3072), "fd": nn.Linear(3072, 768)}))
    return nn.ModuleDict({"h": blocks})
