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

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: elements per block of the exact scan: 128 KiB per float64 temporary, so that a block's temporaries stay in the
#: L2 cache (1 MiB blocks made MobileNetV2's 72 power-law fits 40% slower: 8.2 vs 5.9 ms)
_BLOCK = 1 << 14
_DIRECT = 1 << 15         # below this many tail elements in total, skip pruning
_LEVELS = (16, 64, 256, 1024)  # sample sizes of the successive lower bounds
_INCUMBENTS = 4


def _gaps(T: np.ndarray, C: np.ndarray, n, t0, c0, b, scale, *, clamp: bool) -> np.ndarray:
    """|F - E|, the terms of D, at evaluation points with logs T and counts C; the candidate parameters (n, t0, c0,
    b, scale) broadcast against them.  ``clamp``: both terms are 0 left of a candidate's tail (module docstring);
    callers that pass tails only may skip it."""
    F = T - t0
    if clamp:
        np.maximum(F, 0.0, out=F)
    F *= -b
    np.expm1(F, out=F)
    F *= -1.0 if scale is None else -scale
    E = C - c0
    if clamp:
        np.maximum(E, 0.0, out=E)
    E /= n - c0
    F -= E
    return np.abs(F, out=F)


def _rows(t: np.ndarray, c: np.ndarray, n: float, cols: np.ndarray, t0: np.ndarray, c0: np.ndarray,
          b: np.ndarray, scale: np.ndarray | None, argmax: bool = False):
    """max_m |F - E| for each candidate ("row") over the given column indices.

    ``cols`` is (m, rows) or (m, 1) shared by all rows: one candidate per column of the array, in C order, because
    numpy reduces across the rows of a 2-D array ~7x faster than along short rows (max and argmax are exact, so
    the layout does not change the result).  With ``argmax=True`` also returns the column index (into ``t``) where
    each row's maximum sits.
    """
    F = _gaps(t[cols], c[cols], n, t0, c0, b, scale, clamp=True)
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


def ks_argmins(problems: Sequence[tuple]) -> list[tuple[int, float]]:
    """:func:`ks_argmin` of each problem ``(t, c, n, pos, t0, c0, b, scale)`` (each with at least one candidate;
    ``scale`` None in all of them or in none).

    Two or more problems small enough for the unpruned scan (at most ``_DIRECT`` tail elements each) share their
    array operations (:func:`_direct_distances`); every D is the same number :func:`ks_argmin` computes, so a
    problem's answer does not depend on the others.
    """
    out: list[tuple[int, float] | None] = [None] * len(problems)
    small = [i for i, (t, _, _, pos, *_) in enumerate(problems) if int(np.sum(t.size - pos)) <= _DIRECT]
    if len(small) < 2:
        small = []
    for i in sorted(set(range(len(problems))) - set(small)):
        out[i] = ks_argmin(*problems[i])
    if small:
        for i, D in zip(small, _direct_distances([problems[i] for i in small])):
            j = int(np.argmin(D))
            out[i] = (j, float(D[j]))
    return out  # type: ignore[return-value]


def _direct_distances(problems: list[tuple]) -> list[np.ndarray]:
    """D of every candidate of every problem, the candidates of all problems computed together, each over its own
    tail only.

    The evaluation points of the problems are stored back to back, each problem's followed by copies of its last
    point (a repeated point repeats a term, which leaves a maximum unchanged), so that the tail of every candidate,
    padded to a common width, is one contiguous window: the rows (candidates) of a block are windows of similar
    width, copied out whole, and the D of a row is the same maximum of the same terms as in :func:`ks_distances`.
    """
    counts = [p[3].size for p in problems]
    sizes = np.array([p[0].size for p in problems])
    widths = [size - p[3] for size, p in zip(sizes.tolist(), problems)]
    pad = int(max(w.max() for w in widths))
    # padded layout: problem k's points, then `pad` copies of its last one
    padded = sizes + pad
    first = np.zeros(sizes.size, dtype=np.intp)
    np.cumsum(padded[:-1], out=first[1:])
    local = np.arange(int(padded.sum())) - np.repeat(first, padded)
    source = np.repeat(np.cumsum(sizes) - sizes, padded) + np.minimum(local, np.repeat(sizes - 1, padded))
    t_windows = sliding_window_view(np.concatenate([p[0] for p in problems])[source], pad)
    c_windows = sliding_window_view(np.concatenate([p[1] for p in problems])[source], pad)
    start = np.concatenate([p[3] + f for p, f in zip(problems, first.tolist())])
    width = np.concatenate(widths)
    n = np.repeat([float(p[2]) for p in problems], counts)
    t0, c0, b = (np.concatenate([p[k] for p in problems]) for k in (4, 5, 6))
    scale = None if problems[0][7] is None else np.concatenate([p[7] for p in problems])
    order = np.argsort(-width, kind="stable")             # widest first: the rows of a block have similar widths
    D = np.empty(start.size)
    i = 0
    while i < order.size:
        w = int(width[order[i]])
        rows = order[i:i + max(1, _BLOCK // w)]
        at = start[rows]
        D[rows] = _gaps(t_windows[at, :w], c_windows[at, :w], n[rows, None], t0[rows, None], c0[rows, None],
                        b[rows, None], None if scale is None else scale[rows, None], clamp=False).max(axis=1)
        i += rows.size
    return np.split(D, np.cumsum(counts)[:-1])


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
