"""The finite-n moment laws behind the HTMP kappa estimator, and the estimator itself (formulas: the docstring of
:mod:`hmu_diag.fits.htmp`).

* :func:`log_stat_moments`: mean g_n(kappa) and variance of the log-moment statistic L = log mean(lambda) -
  mean(log lambda) under the finite-n HTMP model (sums of digamma / trigamma values by Euler-Maclaurin, the first 16
  terms exact for near-square layers);
* :func:`_ratio_mean`, :func:`_ratio_sd`: the same for the second-moment statistic R = mean(lambda^2)/mean(lambda)^2;
* :func:`kappa_from_stats`: kappa and its score-band CI from either statistic, for many spectra in one vectorised
  pass (tables of g_n on a log-kappa grid, cached per (gamma, n), whose Euler-Maclaurin end terms depend on gamma
  only and are cached per gamma, and a vectorised root search);
  :func:`kappa_moments` is the one-spectrum form.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial import polynomial as P
from scipy import special

from hmu_diag.fits._batch import RowCache

__all__ = ["KAPPA_MIN", "KAPPA_SEARCH_MAX", "GAMMA_LOG_MAX", "kappa_from_stats", "kappa_moments", "log_stat_moments",
           "log_stat_mp", "moment_statistics", "statistic_name"]

KAPPA_MIN, KAPPA_SEARCH_MAX = 1e-4, 1e6
GAMMA_LOG_MAX = 0.95           # above: second-moment estimator
_EM_HEAD = 16                  # exact terms before Euler-Maclaurin in _digamma_trigamma_sums
_ZETA_MAX_SIZE = 48            # _polygamma: below this many points scipy's Hurwitz zeta is cheaper than the series


_BERNOULLI = ((2, 1.0 / 6.0), (4, -1.0 / 30.0), (6, 1.0 / 42.0), (8, -1.0 / 30.0), (10, 5.0 / 66.0))


@functools.lru_cache(maxsize=None)
def _asymptotic_coefficients(m: int) -> tuple[float, ...]:
    """c_j of psi^(m)(y) ~ (-1)^(m+1) y^-m [(m-1)! + m!/(2y) + sum_j c_j y^-2j], c_j = B_2j (2j+m-1)!/(2j)!."""
    return tuple(b2 * math.factorial(j2 + m - 1) / math.factorial(j2) for j2, b2 in _BERNOULLI)


def _polygamma(m: int, x):
    """psi^(m)(x) for x > 0: digamma for m = 0; for m >= 1 :func:`_polygammas` of that order alone."""
    if m == 0:
        return special.digamma(x)
    return _polygammas((m,), x)[0]


def _polygammas(orders: tuple[int, ...], x) -> list[np.ndarray]:
    """psi^(m)(x) for x > 0 and each order m >= 1 of ``orders``: the recurrence psi^(m)(x) = psi^(m)(x+1) +
    (-1)^(m+1) m!/x^(m+1) six times, then the asymptotic series at y = x + 6 (DLMF 5.15.8):
    (-1)^(m+1) [(m-1)!/y^m + m!/(2 y^(m+1)) + sum_j B_2j (2j+m-1)!/((2j)! y^(2j+m))], error < 1e-10 relative.
    Much faster than scipy.special.polygamma or the Hurwitz zeta function (~300 ns per point) on the moment tables;
    in-place products instead of powers, since numpy's per-call cost dominates.  The orders share the shifts and
    reciprocals of the recurrence (each order's numbers are those it gets alone).  Arrays of at most
    ``_ZETA_MAX_SIZE`` points go to ``scipy.special.zeta`` directly (one call; agrees to ~2e-12 relative)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size <= _ZETA_MAX_SIZE:                  # psi^(m)(x) = (-1)^(m+1) m! zeta(m+1, x): fewer calls
        return [(-1.0) ** (m + 1) * math.factorial(m) * special.zeta(m + 1.0, x) for m in orders]
    top = max(orders)
    y = x.copy()                                  # shifted in place
    acc = {m: np.zeros_like(y) for m in orders}
    for _ in range(6):
        r = np.reciprocal(y)
        term = r * r                              # 1/y^2, then 1/y^(m+1) for m = 1, 2, ...
        for m in range(1, top + 1):
            if m > 1:
                term *= r
            if m in acc:
                acc[m] += term
        y += 1.0
    r = np.reciprocal(y)
    r2 = r * r
    out = []
    for m in orders:
        poly = np.zeros_like(r)
        for c in reversed(_asymptotic_coefficients(m)):     # Horner in 1/y^2
            poly += c
            poly *= r2
        poly += math.factorial(m) * 0.5 * r
        poly += math.factorial(m - 1)
        for _ in range(m):
            poly *= r
        total = acc[m]
        total *= math.factorial(m)
        total += poly
        out.append(total if m % 2 else -total)
    return out


def _end_terms(x_end) -> np.ndarray:
    """(lnGamma, psi, psi', psi'') at ``x_end``, stacked on a new first axis: what the Euler-Maclaurin sums of
    :func:`_digamma_trigamma_sums` need at their last argument."""
    x = np.asarray(x_end, dtype=np.float64)
    tg, p2 = _polygammas((1, 2), x)
    return np.stack([special.gammaln(x), special.digamma(x), tg, p2])


def _digamma_trigamma_sums(x0: np.ndarray, step: np.ndarray, n, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum psi(x_j), sum psi'(x_j)) over x_j = x0 + j step, j = 0..n-1, elementwise over arrays x0, step and n
    (broadcast together; n integer >= 1), given ``end`` = :func:`_end_terms` at the last argument x_{n-1} (broadcast
    to them along its last axes).

    Euler-Maclaurin, sum_{j=a}^{b} h(j) = int_a^b h + (h(a) + h(b))/2 + (h'(b) - h'(a))/12 + R with
    int psi(x0 + u step) du = lnGamma/step, has remainder R ~ (step/x_a)^3/720 relative, below 1e-6 once
    x_a >= _EM_HEAD step.  Where x0 itself is that large (x0/step = N - M + 1 for the moment law: every layer but
    near-square ones), the whole sum is Euler-Maclaurin from j = 0 (two points); otherwise the first ``_EM_HEAD``
    terms (smallest arguments, where psi varies fastest) are summed exactly and the rest by Euler-Maclaurin (all of
    them exactly for n <= _EM_HEAD).  Each element's path depends only on its own arguments, so a result does not
    depend on what else is in the batch.
    """
    x0, step, n = np.broadcast_arrays(np.asarray(x0, dtype=np.float64), np.asarray(step, dtype=np.float64),
                                      np.asarray(n, dtype=np.float64))
    end = np.broadcast_to(end, (4,) + x0.shape)
    far = (n > _EM_HEAD) & (x0 >= _EM_HEAD * step)
    if far.all() or not far.any():
        return _sums(x0, step, n, end, 0 if far.all() else _EM_HEAD)
    s0, s1 = np.empty(n.shape), np.empty(n.shape)
    s0[far], s1[far] = _sums(x0[far], step[far], n[far], end[:, far], 0)
    s0[~far], s1[~far] = _sums(x0[~far], step[~far], n[~far], end[:, ~far], _EM_HEAD)
    return s0, s1


def _sums(x0: np.ndarray, step: np.ndarray, n: np.ndarray, end: np.ndarray, head: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_digamma_trigamma_sums` with the first ``head`` terms exact and Euler-Maclaurin over j = head..n-1
    (where n > head); every element is evaluated at the same head + 1 points j = 0..head (head terms j >= n and, for
    n <= head, the Euler-Maclaurin part are masked out), the last point's terms come in ``end``."""
    j = np.arange(head + 1, dtype=np.float64)             # the exact terms, then the first Euler-Maclaurin point
    xs = x0[..., None] + step[..., None] * j
    dg = special.digamma(xs)
    if head == 0:                                         # the one point is the first Euler-Maclaurin end
        tg, p2 = _polygammas((1, 2), xs)
        p2_a = p2[..., 0]
    else:
        tg = _polygamma(1, xs)
    in_head = j[:head] < n[..., None]
    s0 = np.where(in_head, dg[..., :head], 0.0).sum(axis=-1)
    s1 = np.where(in_head, tg[..., :head], 0.0).sum(axis=-1)
    tail = n > head
    if not tail.any():
        return s0, s1
    if head:
        p2_a = _polygamma(2, xs[..., head])
    lg_a, dg_a, tg_a = special.gammaln(xs[..., head]), dg[..., head], tg[..., head]
    lg_b, dg_b, tg_b, p2_b = end
    em0 = (lg_b - lg_a) / step + 0.5 * (dg_a + dg_b) + step / 12.0 * (tg_b - tg_a)
    em1 = (dg_b - dg_a) / step + 0.5 * (tg_a + tg_b) + step / 12.0 * (p2_b - p2_a)
    return s0 + np.where(tail, em0, 0.0), s1 + np.where(tail, em1, 0.0)


def log_stat_moments(kappa, gamma, n, end_terms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(g_n(kappa), Var_n(kappa)): mean and variance of L = log mean(lambda) - mean(log lambda) under finite-n HTMP.

    Vectorised over ``kappa`` (finite, > 0), ``gamma`` and ``n`` (broadcast together); formulas in
    :mod:`hmu_diag.fits.htmp`'s docstring.  The sums run over k_i/2 = x_end - (i-1) kappa/(2n), x_end =
    kappa/(2 gamma), which does not depend on n: ``end_terms`` = :func:`_end_terms` of x_end, when the caller has
    them (the moment tables share them among all n of one gamma).
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    gamma, n = np.asarray(gamma, dtype=np.float64), np.asarray(n, dtype=np.float64)
    step = kappa / (2.0 * n)
    x_end = kappa / (2.0 * gamma)                        # largest k_i / 2
    x0 = x_end - step * (n - 1)                          # smallest k_i / 2
    s0, s1 = _digamma_trigamma_sums(x0, step, n, _end_terms(x_end) if end_terms is None else end_terms)
    mean = np.log(kappa / gamma) - s0 / n - math.log(2.0)
    var = np.maximum(s1 / n**2 - 2.0 * gamma / (n * kappa), 0.0)
    return mean, var


def log_stat_mp(gamma: float, n: int) -> float:
    """g_n(inf) = -(1/n) sum_i log(1 - gamma (i-1)/n): the log-moment statistic of the MP (kappa -> inf) limit."""
    return float(-np.mean(np.log1p(-gamma * np.arange(n) / n)))


#: log kappa grid (12 points per decade) on which the moment laws are tabulated to bracket and solve roots
_U_GRID = np.linspace(math.log(KAPPA_MIN), math.log(KAPPA_SEARCH_MAX), 121)
_U_STEP = float(_U_GRID[1] - _U_GRID[0])


def _end_rows(gammas: list[float]) -> np.ndarray:
    """:func:`_end_terms` at x_end = exp(_U_GRID)/(2 gamma) for each gamma: an array (gammas, 4, grid)."""
    return _end_terms(np.exp(_U_GRID) / (2.0 * np.array(gammas, dtype=np.float64)[:, None])).transpose(1, 0, 2)


#: the end terms of the moment tables, cached per gamma: every n of one gamma shares them
_end_term_rows = RowCache(_end_rows)


def _table_rows(pairs: list[tuple[float, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(g_n, sd_n) of :func:`log_stat_moments` on ``exp(_U_GRID)`` for each (gamma, n) pair, in one vectorised call."""
    gammas, ns = (np.array(v, dtype=np.float64)[:, None] for v in zip(*pairs))
    end = np.stack(_end_term_rows(gammas[:, 0].tolist()), axis=1)          # (4, pairs, grid)
    mean, var = log_stat_moments(np.exp(_U_GRID), gammas, ns, end)
    return list(zip(mean, np.sqrt(var)))


#: the moment-law tables, cached per (gamma, n): layers of one shape share them
_log_stat_table_rows = RowCache(_table_rows)


def _log_stat_tables(gammas: np.ndarray, ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g_n, sd_n) on ``exp(_U_GRID)`` as rows of two arrays, one row per (gammas[i], ns[i])."""
    rows = _log_stat_table_rows(list(zip(np.asarray(gammas, dtype=np.float64).tolist(),
                                         np.asarray(ns).astype(int).tolist())))
    return np.stack([g for g, _ in rows]), np.stack([sd for _, sd in rows])


def _roots_decreasing(g: np.ndarray, sd: np.ndarray, stats: np.ndarray, z: float) -> np.ndarray:
    """Roots kappa of g_n - stat, g_n - z sd_n - stat and g_n + z sd_n - stat (the point estimate and the two ends of
    the score band) for each row, from their values on ``exp(_U_GRID)`` (rows of :data:`_log_stat_tables`): an
    array (rows, 3).  Each root is the first crossing on the grid: g_n and g_n + z sd_n decrease, while g_n - z sd_n
    rises again slightly towards its MP limit at large kappa, which matters only when kappa itself is inf.

    The grid brackets each root to 1/12 decade; inside the bracket the function is the cubic through the four nearest
    grid values (Newton form in r = (u - u_first)/h, u = log kappa; error ~ 0.023 h^4 |f^(4)|), whose root four
    Illinois (modified false position) steps find: relative error in kappa < 1e-4 (measured against brentq on the exact
    law: 9e-5 at n = 16, the worst case, 6e-6 on a 24-per-decade grid that costs 1.7x more; either is far below the
    statistical error: a 95% CI spans +-20% or more at n = 100).  No sign change on
    [KAPPA_MIN, KAPPA_SEARCH_MAX]: inf (f > 0 everywhere) or KAPPA_MIN (f <= 0 everywhere).  All rows and the three
    functions are solved together, element by element, so a row's roots do not depend on the other rows.
    """
    stats = np.asarray(stats, dtype=np.float64)
    c = np.array([0.0, -z, z])
    vals = (g[:, None, :] + c[None, :, None] * sd[:, None, :]) - stats[:, None, None]     # (rows, 3, grid)
    vals[:, 0, :] = g - stats[:, None]                    # the point estimate: g_n - stat exactly
    grid = _U_GRID.size
    vals = vals.reshape(-1, grid)                         # one function per row from here on
    below = vals <= 0
    k = below.argmax(axis=-1)                             # first grid point past the root
    base = np.arange(k.size) * grid
    crossed = below.ravel()[base + k]                     # argmax is 0 when nothing is below
    first = np.minimum(np.maximum(k - 2, 0), grid - 4)    # cubic stencil first..first+3
    f0, f1, f2, f3 = vals.ravel()[(base + first)[:, None] + np.arange(4)].T
    d1, c2, c3 = f1 - f0, (f2 - 2 * f1 + f0) / 2, (f3 - 3 * f2 + 3 * f1 - f0) / 6
    a, b = (k - 1 - first).astype(np.float64), (k - first).astype(np.float64)     # bracket in r
    flat = vals.ravel()                                   # the stencil values at the bracket's ends
    fa = flat[base + first + np.minimum(np.maximum(k - 1 - first, 0), 3)]
    fb = flat[base + first + np.minimum(np.maximum(k - first, 0), 3)]
    # in a bracket fa > 0 >= fb throughout (halving keeps the signs), so fa - fb > 0; rows without a bracket
    # (no crossing, or at the grid's first point) compute garbage that is replaced below
    moved_a = moved_b = np.zeros(k.size, dtype=bool)     # the last step moved a up / b down (neither before the first)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(4):
            m = np.minimum(np.maximum(a + (b - a) * fa / (fa - fb), a), b)
            fm = f0 + m * (d1 + (m - 1) * (c2 + (m - 2) * c3))                   # the cubic at m
            up = fm > 0                                   # the root lies above m
            down = ~up
            np.multiply(fb, 0.5, out=fb, where=up & moved_a)    # Illinois: an end that stays twice in a row is halved
            np.multiply(fa, 0.5, out=fa, where=down & moved_b)
            np.copyto(a, m, where=up)
            np.copyto(fa, fm, where=up)
            np.copyto(b, m, where=down)
            np.copyto(fb, fm, where=down)
            moved_a, moved_b = up, down
        r = a + (b - a) * fa / (fa - fb)
    roots = np.exp(_U_GRID[first] + _U_STEP * r)
    return np.where(~crossed, math.inf, np.where(k == 0, KAPPA_MIN, roots)).reshape(-1, 3)


def _ratio_mean(kappa, gamma: float, n: int) -> np.ndarray:
    """E_n[R] ~ n E[tr T^2] / E[tr T]^2 for R = mean(lambda^2)/mean(lambda)^2; vectorised, O(1) per kappa.

    With X_i = d_i^2 ~ chi2(A - B i), Y_i = t_i^2 ~ chi2(B (n-1-i)) (i = 0..n-1, A = kappa/gamma, B = kappa/n) and
    E chi2_k^2 = k^2 + 2k: E tr T^2 = sum E X_i^2 + sum E Y_i^2 + 2 sum E Y_i (E X_i + E X_{i+1}), summed in closed
    form with the power sums S1 = sum i, S2 = sum i^2.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    a_, b_ = kappa / gamma, kappa / n
    s1, s2 = n * (n - 1) / 2.0, (n - 1) * n * (2 * n - 1) / 6.0
    sum_x, sum_x2 = n * a_ - b_ * s1, n * a_**2 - 2 * a_ * b_ * s1 + b_**2 * s2          # sum k_x, sum k_x^2
    # j = n-1-i runs over the same range: sum k_y = B S1, sum k_y^2 = B^2 S2
    sum_y, sum_y2 = b_ * s1, b_**2 * s2
    # sum_i k_y,i k_x,i and sum_i k_y,i k_x,i+1 with k_y,i = B(n-1-i), k_x,i = A - B i
    yx = b_ * (a_ * (n * (n - 1) - s1) - b_ * ((n - 1) * s1 - s2))
    yx1 = yx - b_ * sum_y                                  # k_x,i+1 = k_x,i - B
    e_tr2 = sum_x2 + 2 * sum_x + sum_y2 + 2 * sum_y + 2 * (yx + yx1)
    return n * e_tr2 / (n * kappa / gamma) ** 2


@functools.lru_cache(maxsize=256)
def _cubic_sum_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t and weights w with sum_{i=0}^{n-1} p(i) = w . p(t) exactly for every polynomial p of degree <= 3.

    Nodes i = 0, (n-1)/3, 2(n-1)/3, n-1 (all n points when n <= 4).  The weights are the sums over i of the Lagrange
    basis polynomials, taken in u = i/(n-1) with the power sums sum u^p = S_p/(n-1)^p (S_p = sum_{i<n} i^p), where
    every coefficient is O(1): no cancellation.  For large n they tend to n (1/8, 3/8, 3/8, 1/8) (Simpson's 3/8 rule),
    all positive, so the rule adds no rounding beyond that of the summands.
    """
    if n <= 4:
        return np.arange(n, dtype=np.float64), np.ones(n)
    m = n - 1.0
    power_sums = np.array([n, m * n / 2.0, m * n * (2.0 * m + 1.0) / 6.0, (m * n / 2.0) ** 2]) / m ** np.arange(4)
    u = np.array([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0])
    weights = np.empty(4)
    for j in range(4):
        others = np.delete(u, j)
        basis = P.polyfromroots(others) / np.prod(u[j] - others)        # coefficients of L_j(u), ascending
        weights[j] = basis @ power_sums
    return u * m, weights


@functools.lru_cache(maxsize=1024)
def _ratio_mean_coefficients(gamma: float, n: int) -> tuple[float, float]:
    """(c0, c1) with E_n[R] = c0 + c1/kappa exactly (E tr T^2 is quadratic in kappa without a constant term and
    E tr T linear): two evaluations of :func:`_ratio_mean` give them, and every band then inverts in closed form.
    Cached: the spike rounds of both orientations of a layer share them."""
    m_one, m_two = (float(v) for v in _ratio_mean(np.array([1.0, 2.0]), gamma, n))
    c1 = 2.0 * (m_one - m_two)
    return m_one - c1, c1


def _ratio_sd(kappa: float, gamma: float, n: int) -> float:
    """sd of R = n Q/S^2 (Q = tr T^2, S = tr T) by the delta method with the exact Var Q, Cov(Q, S), Var S.

    Q = sum X_i^2 + sum Y_i^2 + 2 sum_i Y_i (X_i + X_{i+1}) in independent X_i ~ chi2(kx_i), Y_i ~ chi2(ky_i)
    (kx_i = kappa/gamma - kappa i/n, ky_i = kappa (n-1-i)/n, i = 0..n-1); the covariances of its terms are nonzero
    only for terms sharing a variable, and use Var X = 2k, Cov(X^2, X) = 4k(k+2), Var X^2 = 8k(k+2)(k+3),
    Var(XY) = 2 k_x k_y (k_x + k_y + 2).  Every summand is a cubic in i (X_{i+1}, Y_{i+1}, Y_{i-1} are the same
    linear functions at i +- 1; the terms with X_{i+1} or Y_{i+1} carry a factor vanishing at i = n-1, since
    ky_{n-1} = 0, and the one term with Y_{-1} = 0 is corrected for), so each sum over i is exact from four points
    (:func:`_cubic_sum_rule`): O(1) instead of O(n).
    """
    nodes, weights = _cubic_sum_rule(n)
    step = kappa / n
    var_q = cov_qs = var_s = e_s = e_q = 0.0
    for i, w in zip(nodes.tolist(), weights.tolist()):    # four points: plain floats (numpy's per-call cost dominates)
        kx = kappa / gamma - step * i
        kx1 = kx - step                                   # X_{i+1}
        ky = step * (n - 1 - i)                           # Y_i; ky_{n-1} = 0 (a zero variable)
        ky_next, ky_prev = ky - step, ky + step           # Y_{i+1}, Y_{i-1} (continued to i = 0; corrected below)
        var_x, var_y = 2.0 * kx, 2.0 * ky
        cov_x, cov_x1, cov_y = 4.0 * kx * (kx + 2.0), 4.0 * kx1 * (kx1 + 2.0), 4.0 * ky * (ky + 2.0)
        var_q += w * (8.0 * kx * (kx + 2.0) * (kx + 3.0) + 8.0 * ky * (ky + 2.0) * (ky + 3.0)
                      + 8.0 * ky * kx * (ky + kx + 2.0) + 8.0 * ky * kx1 * (ky + kx1 + 2.0)
                      + 2.0 * (2.0 * ky * (cov_x + cov_x1) + 2.0 * (kx + kx1) * cov_y + 4.0 * kx * kx1 * var_y
                               + 8.0 * ky_next * ky * kx1))
        cov_qs += w * (cov_x + 2.0 * (ky_prev + ky) * var_x + cov_y + 2.0 * (kx + kx1) * var_y)
        var_s += w * (var_x + var_y)
        e_s += w * (kx + ky)
        e_q += w * (kx * (kx + 2.0) + ky * (ky + 2.0) + 2.0 * ky * (kx + kx1))
    cov_qs -= 2.0 * kappa * (2.0 * kappa / gamma)         # Y_{-1} = 0, not the continuation's kappa: 2 Y_{-1} Var X_0
    grad_q, grad_s = n / e_s**2, -2 * n * e_q / e_s**3
    return float(math.sqrt(max(grad_q**2 * var_q + 2 * grad_q * grad_s * cov_qs + grad_s**2 * var_s, 0.0)))


@functools.lru_cache(maxsize=16)
def _normal_quantile(p: float) -> float:
    """Standard normal quantile (z = 1.96 for p = 0.975), cached: a fit asks for the same level every round."""
    return float(special.ndtri(p))


def statistic_name(gamma: float) -> str:
    """The moment statistic the estimator uses at this gamma: "log-moment", or "second-moment" above
    GAMMA_LOG_MAX."""
    return "log-moment" if gamma <= GAMMA_LOG_MAX else "second-moment"


def moment_statistics(mean, mean_log, mean_sq, gammas) -> np.ndarray:
    """The statistic of each spectrum from its sample moments (of x scaled to max 1): L = log mean(x) - mean(log x),
    or R = mean(x^2)/mean(x)^2 where gamma > GAMMA_LOG_MAX (:func:`statistic_name`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(gammas) > GAMMA_LOG_MAX, mean_sq / np.square(mean), np.log(mean) - mean_log)


def _ratio_roots(stat: float, gamma: float, n: int, z: float) -> tuple[float, float, float]:
    """(kappa, lo, hi) from the second-moment statistic R: kappa = c1/(R - c0), the Wald band R -+ z sd(kappa)."""
    c0, c1 = _ratio_mean_coefficients(gamma, n)

    def solve(target: float) -> float:
        excess = target - c0
        if excess <= c1 / KAPPA_SEARCH_MAX:
            return math.inf
        return KAPPA_MIN if excess >= c1 / KAPPA_MIN else c1 / excess

    kappa = solve(stat)
    sd = _ratio_sd(min(kappa, 1e9), gamma, n)
    return kappa, solve(stat + z * sd), solve(stat - z * sd)


def kappa_from_stats(stats, gammas, ns, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment estimates of kappa with their asymptotic CIs, ``(kappa, kappa_lo, kappa_hi)`` arrays, for many spectra.

    ``stats[i]``: the statistic of spectrum i (``n = ns[i]`` values, aspect ratio ``gammas[i]``) named by
    :func:`statistic_name`: L = log mean(x) - mean(log x), or R = mean(x^2)/mean(x)^2 above GAMMA_LOG_MAX.  The
    log-moment rows are solved together (one table lookup, one vectorised root search), the rare second-moment
    rows in closed form.  kappa values above ``KAPPA_SEARCH_MAX`` are inf, below ``KAPPA_MIN`` are clipped to it.
    """
    stats, gammas = np.asarray(stats, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    ns = np.asarray(ns, dtype=np.int64)
    z = _normal_quantile(0.5 + level / 2.0)
    out = np.empty((stats.size, 3))
    log_rows = gammas <= GAMMA_LOG_MAX
    if log_rows.any():
        out[log_rows] = _roots_decreasing(*_log_stat_tables(gammas[log_rows], ns[log_rows]), stats[log_rows], z)
    for i in np.flatnonzero(~log_rows).tolist():
        out[i] = _ratio_roots(float(stats[i]), float(gammas[i]), int(ns[i]), z)
    return out[:, 0], out[:, 1], out[:, 2]


def kappa_moments(x, gamma: float, *, level: float = 0.95) -> tuple[float, float, float, str]:
    """Moment estimate of kappa with its asymptotic CI: ``(kappa, kappa_lo, kappa_hi, statistic)``.

    ``x``: positive values of the HTMP variable (one orientation, spikes removed); one spectrum's
    :func:`kappa_from_stats`.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x / np.max(x)                 # scale-free statistics; avoids overflow for inverse spectra (1/lambda ~ 1e300)
    stat = moment_statistics(np.mean(x), np.mean(np.log(x)), np.mean(x * x), [gamma])
    kappa, lo, hi = kappa_from_stats(stat, [gamma], [x.size], level=level)
    return float(kappa[0]), float(lo[0]), float(hi[0]), statistic_name(gamma)
