"""Tabulated HTMP quantiles for fits: F and 1 - F of HTMP(gamma, kappa) by interpolation, in microseconds.

Inside fits (fit mode, :mod:`hmu_diag.htmp._accuracy`) the CDF only feeds KS distances, binned log-likelihoods and
spike thresholds, so an absolute error below ``FIT_CDF_ATOL`` = 1e-4 suffices.  The exact evaluators cost 0.5-15 ms
per call (four ``hyp1f1`` per point, or an ODE for square layers and near-integer delta); this table answers the
same question with one small matrix product and one ``np.interp`` (:func:`cdf_sf_many`), and gives the spike
thresholds' upper quantiles directly (:func:`log_quantile_many`: two tabulated levels per law).

Table (``data/htmp_quantiles.npz``, built by ``make htmp-table``, ~4 min on 2 cores): the
unit-scale quantiles ``log x_p`` of HTMP(gamma, kappa) at the logit levels ``z = log(p/(1-p))`` in [-16, 16]
(step 0.05), on the nodes

* ``log10 kappa`` = -2.0, -1.9, ..., 2.3 (kappa 0.01 .. 199.5; beyond, kappa >= 200, the MP closed form serves);
* ``v = log10((1 - gamma)/gamma)`` = -1.3, -1.2, ..., 1.7 (gamma 0.952 .. 0.0196): the law depends on gamma through
  delta/kappa = (1 - gamma)/(2 gamma), and in this coordinate cubic interpolation stays accurate up to gamma ~ 0.95
  (in log gamma it errs by 1e-3 already at gamma ~ 0.7);
* a separate row at gamma = 1 (square layers, delta = 0, v = -inf: no interpolation in gamma reaches it).

A query (gamma, kappa) combines the 4 x 4 nearest node curves with cubic Lagrange weights in (v, log10 kappa)
(4 kappa nodes only at gamma = 1), then interpolates z linearly in log x at the data points and returns
F = expit(z), 1 - F = expit(-z) (both tails keep their relative accuracy).  Measured against the exact CDF at
off-node parameters: max |dF| < 1e-4 (tests/test_htmp_density.py).  Outside the domain (gamma in (0.952, 1) or
below 0.0196, kappa below 0.01), next to nodes that could not be built (small gamma with large kappa, where the
exact law needs mpmath beyond the fit limits), or for points beyond the tabulated levels where the clamped value could
be off by more than 1e-4, :func:`cdf_sf` returns None and the caller evaluates the law exactly.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import special as sp

__all__ = ["cdf_sf", "cdf_sf_many", "log_quantile_many", "build", "TABLE_PATH"]

TABLE_PATH = Path(__file__).with_name("data") / "htmp_quantiles.npz"
LOG10_KAPPA = np.round(np.arange(-2.0, 2.3 + 1e-9, 0.1), 10)
V_GAMMA = np.round(np.arange(-1.3, 1.7 + 1e-9, 0.1), 10)
LEVELS = np.round(np.arange(-16.0, 16.0 + 1e-9, 0.05), 10)
#: clamping a point outside the tabulated levels errs by at most expit(level); refuse beyond this
_CLAMP_TOL = 1e-4
#: points per node: a coarse pass over the law's whole range, then a dense pass over the tabulated levels
_COARSE, _DENSE = 2000, 8000


_LOADED: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}


def _table() -> tuple[np.ndarray, np.ndarray] | None:
    """(log quantiles of the gamma rows, shape (len(V_GAMMA), len(LOG10_KAPPA), len(LEVELS)); the gamma = 1 row,
    shape (len(LOG10_KAPPA), len(LEVELS))), or None when the table file is missing.  Read once per process (3.6 MB on
    disk, 7 MB in memory, ~10 ms), like an import: kept apart from the per-analysis lru caches."""
    if "table" not in _LOADED:
        if TABLE_PATH.exists():
            with np.load(TABLE_PATH) as data:     # float32 on disk; float64 here, the type the weights combine in
                _LOADED["table"] = (data["log_q"].astype(np.float64), data["log_q_square"].astype(np.float64))
        else:
            _LOADED["table"] = None
    return _LOADED["table"]


def _stencils(values: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cubic Lagrange stencils on a uniform grid for many values: (inside the node range, index of the first of the 4
    nodes around each value, their weights (values, 4)).

    With r = (value - nodes[first])/step in [0, 3] the weights of nodes 0..3 are -(r-1)(r-2)(r-3)/6, r(r-2)(r-3)/2,
    -r(r-1)(r-3)/2, r(r-1)(r-2)/6.  Values outside the range get arbitrary weights (``inside`` False)."""
    lo, hi = float(nodes[0]), float(nodes[-1])
    inside = (values >= lo) & (values <= hi)
    step = (hi - lo) / (nodes.size - 1)
    pos = np.where(inside, (values - lo) / step, 0.0)
    first = np.minimum(np.maximum(pos.astype(np.intp) - 1, 0), nodes.size - 4)     # pos >= 0: truncation = floor
    r = pos - first
    r1, r2, r3 = r - 1, r - 2, r - 3
    weights = np.empty(r.shape + (4,))
    weights[..., 0] = -r1 * r2 * r3 / 6
    weights[..., 1] = r * r2 * r3 / 2
    weights[..., 2] = -r * r1 * r3 / 2
    weights[..., 3] = r * r1 * r2 / 6
    return inside, first, weights


def _from_levels(x: np.ndarray, log_q: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(F, 1 - F) at x from one interpolated quantile curve log_q (at LEVELS), or None (module docstring)."""
    valid = np.isfinite(log_q)
    if valid.sum() < 8:
        return None
    z_levels, log_q = LEVELS[valid], np.maximum.accumulate(log_q[valid])
    log_x = np.log(x)
    below, above = log_x < log_q[0], log_x > log_q[-1]
    if (below.any() and sp.expit(z_levels[0]) > _CLAMP_TOL) or (above.any() and sp.expit(-z_levels[-1]) > _CLAMP_TOL):
        return None
    z = np.interp(log_x, log_q, z_levels)
    return sp.expit(z), sp.expit(-z)


def cdf_sf_many(x: np.ndarray, gammas, kappas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`cdf_sf` for many parameter pairs: ``(F, 1 - F, ok)``, F and 1 - F of HTMP(gammas[i], kappas[i]) at unit
    scale at the points ``x[i]`` > 0 (a 2-D array, one row per law), and ``ok[i]`` False (its row NaN) where the table
    cannot answer.  The 4 x 4 node curves of every pair are combined in one vectorised step, and rows whose curve is
    defined at every level (no clamping question) are finished together; each row's result does not depend on the
    other rows."""
    x = np.asarray(x, dtype=np.float64)
    F, Q = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    ok = np.zeros(x.shape[0], dtype=bool)
    if _table() is None or not x.shape[0]:
        return F, Q, ok
    log_q, usable = _log_quantile_curves(gammas, kappas)
    complete = usable & np.isfinite(log_q).all(axis=1)
    # rows with every level: clamping beyond +-16 (expit(-16) ~ 1e-7) is always within _CLAMP_TOL
    z = np.full(x.shape, np.nan)
    curves = log_q[complete]
    falling = ~(np.diff(curves, axis=1) >= 0).all(axis=1)      # the running maximum changes only these rows
    if falling.any():
        curves[falling] = np.maximum.accumulate(curves[falling], axis=1)
    for i, log_x, curve in zip(np.flatnonzero(complete).tolist(), np.log(x[complete]), curves):
        z[i] = np.interp(log_x, curve, LEVELS)
    F[complete], Q[complete], ok[complete] = sp.expit(z[complete]), sp.expit(-z[complete]), True
    for i in np.flatnonzero(usable & ~complete).tolist():
        res = _from_levels(x[i], log_q[i])
        if res is not None:
            F[i], Q[i], ok[i] = res[0], res[1], True
    return F, Q, ok


def _log_quantile_curves(gammas, kappas, levels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(log x of HTMP(gammas[i], kappas[i]) at unit scale at the tabulated levels - all of them, or the indices
    ``levels[i]`` (one row per law) -, usable[i]): the 4 x 4 node curves around (gamma, kappa) combined with cubic
    Lagrange weights in (v, log10 kappa) (4 kappa nodes at gamma = 1); rows outside the table's domain (usable False)
    are NaN."""
    table = _table()
    gammas, kappas = np.asarray(gammas, dtype=np.float64), np.asarray(kappas, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_in, k0, wk = _stencils(np.log10(kappas), LOG10_KAPPA)
        square = gammas == 1.0
        g_in, g0, wg = _stencils(np.log10((1.0 - gammas) / gammas), V_GAMMA)
    usable = k_in & (square | g_in)
    log_q = np.full((gammas.size, LEVELS.size if levels is None else levels.shape[1]), np.nan)
    four = np.arange(4)
    rows = usable & ~square
    if rows.any():                        # sum over the 4 x 4 nodes of w_gamma[i] w_kappa[j] log_q[i, j]
        g_nodes, k_nodes = g0[rows][:, None, None] + four[None, :, None], k0[rows][:, None, None] + four[None, None, :]
        nodes = (table[0][g_nodes, k_nodes] if levels is None
                 else table[0][g_nodes[..., None], k_nodes[..., None], levels[rows][:, None, None, :]])
        weights = (wg[rows][:, :, None] * wk[rows][:, None, :]).reshape(-1, 1, 16)
        log_q[rows] = np.matmul(weights, nodes.reshape(weights.shape[0], 16, -1))[:, 0, :]
    rows = usable & square
    if rows.any():
        k_nodes = k0[rows][:, None] + four[None, :]
        nodes = table[1][k_nodes] if levels is None else table[1][k_nodes[..., None], levels[rows][:, None, :]]
        log_q[rows] = np.matmul(wk[rows][:, None, :], nodes)[:, 0, :]
    return log_q, usable


def log_quantile_many(z: np.ndarray, gammas, kappas) -> np.ndarray:
    """log x_p of HTMP(gammas[i], kappas[i]) at unit scale at the logit level z[i] = log(p/(1-p)) (p the CDF's
    value), from the table: the combined node curve (:func:`cdf_sf_many`) at the two tabulated levels around z[i],
    linear in z between them.  NaN where the table cannot answer (outside its domain, z outside [-16, 16], or a node
    not built); the caller then evaluates the law."""
    z = np.asarray(z, dtype=np.float64)
    out = np.full(z.shape, np.nan)
    if _table() is None or not z.size:
        return out
    step = (LEVELS[-1] - LEVELS[0]) / (LEVELS.size - 1)
    inside = (z >= LEVELS[0]) & (z <= LEVELS[-1])
    pos = np.where(inside, (z - LEVELS[0]) / step, 0.0)
    first = np.minimum(pos.astype(np.intp), LEVELS.size - 2)           # pos >= 0: truncation = floor
    log_q, usable = _log_quantile_curves(gammas, kappas, first[:, None] + np.arange(2))
    frac = pos - first
    value = log_q[:, 0] + frac * (log_q[:, 1] - log_q[:, 0])
    return np.where(inside & usable, value, np.nan)


def cdf_sf(x: np.ndarray, gamma: float, kappa: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(F, 1 - F) of HTMP(gamma, kappa) at unit scale at the points x > 0 from the table, or None (module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    F, Q, ok = cdf_sf_many(x.reshape(1, -1), [gamma], [kappa])
    return (F[0].reshape(x.shape), Q[0].reshape(x.shape)) if ok[0] else None


# ---------------------------------------------------------------------------------------------------- building


def _node_log_quantiles(gamma: float, kappa: float) -> np.ndarray:
    """log x at LEVELS for HTMP(gamma, kappa, 1) from the exact CDF (NaN where out of reach or not evaluable)."""
    # imported here: hmu_diag.htmp.density imports this module for its fit-mode lookups
    from hmu_diag.errors import HmuDiagError
    from hmu_diag.htmp import _table as ode_table
    from hmu_diag.htmp._kummer import FIT_MPMATH_LIMITS, mpmath_limits
    from hmu_diag.htmp.density import _cdf_sf_unit, params

    def logit_cdf(x: np.ndarray) -> np.ndarray:         # log F - log(1 - F), both from one evaluation of the phase
        f, q = _cdf_sf_unit(x, gamma, kappa)
        return np.log(f) - np.log(q)

    out = np.full(LEVELS.size, np.nan)
    p = params(gamma, kappa)
    tau_lo, tau_hi = ode_table.tau_range(p["a"], p["s"], p["delta"])
    log_s = math.log(p["s"])
    try:
        with np.errstate(all="ignore"), mpmath_limits(*FIT_MPMATH_LIMITS):
            lo, hi = tau_lo - log_s, tau_hi - log_s
            coarse = np.linspace(lo, hi, _COARSE)
            z = logit_cdf(np.exp(coarse))
            keep = np.isfinite(z) & np.concatenate([[True], np.diff(z) > 0])
            z, coarse = z[keep], coarse[keep]
            if not (z[0] < LEVELS[-1] + 1.0 and z[-1] > LEVELS[0] - 1.0):
                return out
            # dense pass: points evenly spaced in z (mapped through the coarse inverse), so that every level is
            # resolved even where the law spans hundreds of e-folds (square layers)
            targets = np.linspace(max(z[0], LEVELS[0] - 1.0), min(z[-1], LEVELS[-1] + 1.0), _DENSE)
            dense = np.unique(np.concatenate([np.interp(targets, z, coarse), coarse]))
            z = logit_cdf(np.exp(dense))
    except HmuDiagError:
        return out
    ok = np.isfinite(z)
    z, dense = z[ok], dense[ok]
    rising = np.concatenate([[True], np.diff(z) > 0])
    z, dense = z[rising], dense[rising]
    if z.size < 2:
        return out
    covered = (LEVELS >= z[0]) & (LEVELS <= z[-1])
    out[covered] = np.interp(LEVELS[covered], z, dense)
    return out


def _build_row(v: float | None) -> np.ndarray:
    gamma = 1.0 if v is None else 1.0 / (1.0 + 10.0 ** v)
    return np.array([_node_log_quantiles(gamma, 10.0 ** u) for u in LOG10_KAPPA], dtype=np.float32)


def build(processes: int = 2) -> None:
    """Compute every node from the exact law and write ``TABLE_PATH`` (deterministic; ~4 min on 2 cores)."""
    from multiprocessing import get_context

    rows = [None, *V_GAMMA.tolist()]
    with get_context("spawn").Pool(processes) as pool:
        built = pool.map(_build_row, rows, chunksize=1)
    TABLE_PATH.parent.mkdir(exist_ok=True)
    np.savez(TABLE_PATH, log_q_square=built[0], log_q=np.stack(built[1:]), log10_kappa=LOG10_KAPPA,
                        v_gamma=V_GAMMA, levels=LEVELS)

