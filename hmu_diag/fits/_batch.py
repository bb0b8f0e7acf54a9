"""Many spectra as one batch of array operations (:func:`hmu_diag.fits.htmp.fit_many`,
:func:`hmu_diag.fits.mp.fit_mp_many`): series of different lengths stored back to back, reduced segment by segment."""
from __future__ import annotations

from collections.abc import Sequence

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

    def prefix_reduce(self, arrays: Sequence[np.ndarray], rows: np.ndarray, lengths: np.ndarray,
                      ufunc: np.ufunc = np.add) -> list[np.ndarray]:
        """ufunc-reduction of a[start : start + lengths[k]] of series ``rows[k]`` (lengths >= 1), for each element
        array ``a`` of ``arrays`` (laid out like ``values``)."""
        bounds = np.stack([self.starts[rows], self.starts[rows] + lengths], axis=1).ravel()
        return [ufunc.reduceat(a, bounds)[::2] for a in arrays]

    def per_element(self, per_series: np.ndarray, sentinel: float = 0.0) -> np.ndarray:
        """One value per series, repeated over its elements (``sentinel`` at the sentinel)."""
        return np.repeat(np.append(per_series, sentinel), np.append(self.sizes, 1))
