"""Many spectra as one batch of array operations (:func:`hmu_diag.fits.htmp.fit_many`,
:func:`hmu_diag.fits.mp.fit_mp_many`): series of different lengths stored back to back, reduced segment by segment."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class Segments:
    """Series of different lengths stored back to back in one 1-D array (no padding), followed by a sentinel 1.0 so
    that every segment end is a valid index.  Reductions over any prefix y[:b] of each series (its bulk) take one
    ``ufunc.reduceat`` call; each runs over its own segment only, so a series' results never depend on the other
    series of the batch."""

    def __init__(self, series: Sequence[np.ndarray]) -> None:
        self.sizes = np.array([len(s) for s in series])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.intp)
        self.values = np.concatenate([*series, [1.0]]).astype(np.float64)
        #: position of each element inside its series (the sentinel: 0)
        self.position = np.append(np.arange(self.sizes.sum()) - np.repeat(self.starts, self.sizes), 0)
        self._repeats = np.append(self.sizes, 1)          # each series' length, then the sentinel's

    def prefix_reduce(self, arrays: Sequence[np.ndarray], rows: np.ndarray, lengths: np.ndarray,
                      ufunc: np.ufunc = np.add) -> list[np.ndarray]:
        """ufunc-reduction of a[start : start + lengths[k]] of series ``rows[k]`` (lengths >= 1), for each element
        array ``a`` of ``arrays`` (laid out like ``values``)."""
        bounds = np.stack([self.starts[rows], self.starts[rows] + lengths], axis=1).ravel()
        return [ufunc.reduceat(a, bounds)[::2] for a in arrays]

    def per_element(self, per_series: np.ndarray, sentinel: float = 0.0) -> np.ndarray:
        """One value per series, repeated over its elements (``sentinel`` at the sentinel)."""
        return np.repeat(np.append(per_series, sentinel), self._repeats)


class RowCache:
    """Rows computed for many keys at once and cached per key: ``cache(keys)`` returns one row per key, computing
    the missing ones in a single call of ``compute(missing_keys) -> rows`` (so a batch of layers costs about one
    evaluation), keeping at most ``maxsize`` keys (oldest dropped first).  ``cache_clear()`` empties it, like
    functools' caches (the benchmarks call it to time first analyses)."""

    def __init__(self, compute: Callable[[list], Sequence], maxsize: int = 4096) -> None:
        self.compute = compute
        self.maxsize = maxsize
        self.rows: dict = {}

    def __call__(self, keys: Sequence) -> list:
        missing = list(dict.fromkeys(k for k in keys if k not in self.rows))
        if missing:
            self.rows.update(zip(missing, self.compute(missing)))
            while len(self.rows) > self.maxsize:
                del self.rows[next(iter(self.rows))]
        return [self.rows[k] for k in keys]

    def cache_clear(self) -> None:
        self.rows.clear()
