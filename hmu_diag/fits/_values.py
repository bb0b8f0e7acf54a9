"""The values every fit starts from: the positive finite entries of an array, sorted, and how many others there were."""
from __future__ import annotations

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
    keep = np.isfinite(x) & (x > 0)
    return np.sort(x[keep]), int(x.size - np.count_nonzero(keep))
