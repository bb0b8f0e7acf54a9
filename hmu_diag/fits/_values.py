"""The values every fit starts from: the positive finite entries of an array, sorted, and how many others there were."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def positive_sorted(values) -> tuple[np.ndarray, int]:
    """(sorted positive finite float64 values, number of entries dropped: zeros, negatives, NaN, +-inf).

    An input that already is such an array (a spectrum as the pipeline hands it over) is returned as it is, without
    a copy: a 1-D float64 array with a positive first entry, a finite last one and no decrease in between (a NaN
    anywhere fails that comparison) has nothing to drop or sort.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size and x[0] > 0 and x[-1] < np.inf and (x.size == 1 or bool(np.all(x[1:] >= x[:-1]))):
        return x, 0
    return _cleaned(x)


def _cleaned(x: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`positive_sorted` of a 1-D float64 array that needs cleaning: drop, then sort."""
    keep = np.isfinite(x) & (x > 0)
    return np.sort(x[keep]), int(x.size - np.count_nonzero(keep))


def positive_sorted_many(values_list: Sequence) -> list[tuple[np.ndarray, int]]:
    """:func:`positive_sorted` of each entry.  The entries that already are sorted positive finite float64 arrays (a
    model's spectra as the pipeline hands them over) are recognised in one vectorised pass over all of them and
    returned without a copy; the others are cleaned one by one."""
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values_list]
    sizes = np.array([a.size for a in arrays], dtype=np.intp)
    clean = np.zeros(len(arrays), dtype=bool)
    filled = np.flatnonzero(sizes > 0)
    if filled.size:
        flat = np.concatenate([arrays[i] for i in filled.tolist()])
        ends = np.cumsum(sizes[filled])
        starts = ends - sizes[filled]
        rising = np.ones(flat.size, dtype=bool)           # each value >= its predecessor (False for NaN)
        np.greater_equal(flat[1:], flat[:-1], out=rising[1:])
        rising[starts] = True                             # a series' first value has no predecessor
        clean[filled] = (flat[starts] > 0) & (flat[ends - 1] < np.inf) & np.logical_and.reduceat(rising, starts)
    return [(a, 0) if ok else _cleaned(a) for a, ok in zip(arrays, clean.tolist())]
