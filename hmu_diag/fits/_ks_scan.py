"""Vectorised Kolmogorov-Smirnov distances for many x_min candidates, and an exact pruned argmin.

Notation (all arrays float64):
    t[m]   log of the m-th evaluation point (ascending),
    c[m]   number of data points strictly below evaluation point m (left-limit ECDF count),
    n      number of data points,
and per candidate i: the first evaluation point ``pos[i]`` of its tail, ``t0[i] = ln x_min``,
``c0[i]`` (points below x_min), ``b[i] = alpha - 1`` and ``scale[i]`` (1 for the plain power law,
``1 / (1 - (x_max/x_min)^(-b))`` for the one truncated at x_max).

The distance is powerlaw 2.0.0's ``compute_distance_metrics`` D (the left-limit convention, also used by
Clauset's code and plfit):

    D_i = max_{m >= pos[i]} | scale_i * (1 - exp(-b_i (t_m - t0_i)))  -  (c_m - c0_i) / (n - c0_i) |.

For m < pos[i] both terms are clamped to 0, so a row can span columns left of its own tail.

Exact argmin without the O(n^2) scan (``hessian_jacobian_powerlaw.md`` C.5): the maximum over a subset of
a candidate's tail is a lower bound L_i <= D_i that is bit-identical to the corresponding terms of the
exact maximum.  With an incumbent T (the smallest exact D of a few candidates of smallest L), every
candidate with L_i > T can be dropped: the minimiser has L <= D_min <= T.  Ties keep the lowest index,
as ``numpy.argmin`` does.
"""
from __future__ import annotations

import numpy as np

_BLOCK = 1 << 17          # elements per block of the exact scan (1 MiB per float64 temporary)
_DIRECT = 1 << 15         # below this many tail elements in total, skip pruning
_LEVELS = (16, 64, 256, 1024)  # sample sizes of the successive lower bounds
_INCUMBENTS = 4


def _rows(t: np.ndarray, c: np.ndarray, n: float, cols: np.ndarray, t0: np.ndarray, c0: np.ndarray,
          b: np.ndarray, scale: np.ndarray | None, argmax: bool = False):
    """max_m |F - E| for each candidate ("row") over the given column indices.

    ``cols`` is (m, rows) or (m, 1) shared by all rows: one candidate per column of the array, in C order, because
    numpy reduces across the rows of a 2-D array ~7x faster than along short rows (max and argmax are exact, so
    the layout does not change the result).  With ``argmax=True`` also returns the column index (into ``t``) where
    each row's maximum sits.
    """
    dt = t[cols] - t0
    np.maximum(dt, 0.0, out=dt)
    dt *= -b
    F = np.expm1(dt, out=dt)
    F *= -1.0 if scale is None else -scale
    E = c[cols] - c0
    np.maximum(E, 0.0, out=E)
    E /= n - c0
    F -= E
    np.abs(F, out=F)
    if not argmax:
        return F.max(axis=0)
    j = F.argmax(axis=0)
    rows = np.arange(F.shape[1])
    return F[j, rows], np.broadcast_to(cols, F.shape)[j, rows]


def ks_distances(t: np.ndarray, c: np.ndarray, n: float, pos: np.ndarray, t0: np.ndarray, c0: np.ndarray,
                 b: np.ndarray, scale: np.ndarray | None = None, argmax: bool = False):
    """Exact D for every candidate (and, with ``argmax``, the evaluation point where it is attained)."""
    out = np.empty(pos.size)
    where = np.empty(pos.size, dtype=np.intp)
    order = np.argsort(pos, kind="stable")
    U = t.size
    i = 0
    while i < order.size:
        p0 = pos[order[i]]
        rows = max(1, _BLOCK // max(U - p0, 1))
        sel = order[i:i + rows]
        cols = np.arange(p0, U)[:, None]
        res = _rows(t, c, n, cols, t0[sel], c0[sel], b[sel], None if scale is None else scale[sel], argmax)
        if argmax:
            out[sel], where[sel] = res
        else:
            out[sel] = res
        i += rows
    return (out, where) if argmax else out


def _lower_bounds(t, c, n, pos, t0, c0, b, scale, G, hot):
    """L_i from G rank-spaced points of each tail plus the 'hot' columns (exact when the tail has <= G points).

    Hot columns are where earlier exact maxima sat; neighbouring candidates tend to peak there too.
    """
    last = t.size - 1
    frac = np.linspace(0.0, 1.0, G)
    out = np.empty(pos.size)
    step = max(1, _BLOCK // (G + hot.size))
    for i in range(0, pos.size, step):
        p = pos[i:i + step]
        cols = np.rint(frac[:, None] * (last - p)).astype(np.intp) + p            # (G, rows): see _rows
        if hot.size:
            cols = np.concatenate([cols, np.maximum(hot[:, None], p)], axis=0)
        out[i:i + step] = _rows(t, c, n, cols, t0[i:i + step], c0[i:i + step], b[i:i + step],
                                None if scale is None else scale[i:i + step])
    return out


def ks_argmin(t: np.ndarray, c: np.ndarray, n: float, pos: np.ndarray, t0: np.ndarray, c0: np.ndarray,
              b: np.ndarray, scale: np.ndarray | None = None) -> tuple[int, float]:
    """Index (into the candidate arrays) and value of the smallest D; lowest index on ties."""
    def sub(idx):
        return (pos[idx], t0[idx], c0[idx], b[idx], None if scale is None else scale[idx])

    alive = np.arange(pos.size)
    T = np.inf
    hot = np.empty(0, dtype=np.intp)
    for G in _LEVELS:
        if np.sum(t.size - pos[alive]) <= _DIRECT:
            break
        L = _lower_bounds(t, c, n, *sub(alive), G, hot)
        best = np.argsort(L, kind="stable")[:_INCUMBENTS]
        D, where = ks_distances(t, c, n, *sub(alive[best]), argmax=True)
        T = min(T, D.min())
        hot = np.unique(np.concatenate([hot, where]))
        alive = alive[L <= T]
    D = ks_distances(t, c, n, *sub(alive))
    j = int(np.argmin(D))
    return int(alive[j]), float(D[j])
