"""Fit the HTMP law (Hodgkinson, Wang & Mahoney 2025) to an eigenvalue spectrum: kappa, scale, CI, orientation.

Model (research note htmp.md sec. 2.2-2.4): the ``n`` eigenvalues are those of the finite-N HTMP ensemble, the
beta-Laguerre ensemble with Dyson index ``kappa/n`` and ``M = n/gamma``, scaled to mean ``scale``.  In the
Dumitriu-Edelman bidiagonal model ``T = B B^T`` with independent ``d_i^2 ~ chi2(k_i)``,
``k_i = kappa/gamma - kappa (i-1)/n`` on the diagonal of B and ``t_i^2 ~ chi2(kappa (n-i)/n)`` below it, and
``lambda = eig(T) scale gamma/kappa``.  Two facts make moment estimators exact at finite n:

* ``sum log lambda = log det T + n log c = sum_i log d_i^2 + n log c`` is a sum of independent log-chi-squares;
* ``sum lambda = tr T`` and ``sum lambda^2 = tr T^2`` are polynomials in the independent chi-squares.

Estimators (``method``):

``"moments"`` (default).  Scale = mean eigenvalue (the exact MLE of the scale in the finite-n model).  kappa
solves ``L = g_n(kappa)`` for the scale-free log-moment statistic ``L = log mean(lambda) - mean(log lambda)``:

    g_n(kappa)   = log(kappa/gamma) - (1/n) sum_i [psi(k_i/2) + log 2]     (mean of L, up to O(1/(n kappa)))
    Var_n(kappa) = (1/n^2) sum_i psi'(k_i/2) - 2 gamma/(n kappa)          (delta method, exact chi-square moments)

(the n -> inf limit of g_n is htmp.md sec. 4.3's ``log s - (2/kappa)[lnGamma(s) - lnGamma(delta)]``).  g_n decreases
from +inf (kappa -> 0) to its MP value g_n(inf) = -(1/n) sum log(1 - gamma (i-1)/n); a statistic at or below it
gives kappa = inf.  For gamma > 0.95 the lower tail (density ~ lambda^(delta-1), delta -> 0) makes log lambda
depend on eigenvalues below floating-point resolution, so the second-moment statistic ``R = mean(lambda^2)/mean^2``
is used instead, with ``E_n[R] = n E[tr T^2]/E[tr T]^2 = c0 + c1/kappa`` in closed form (-> 1 + gamma + 2 gamma/kappa;
so kappa = c1/(R - c0) needs no root search) and its standard deviation by the delta method with the exact
covariances of tr T and tr T^2 (closed form, O(1); no eigenvalues).

``"ml"`` / ``"ks"``.  Refinements that start from the moment estimate and minimise, over log kappa (scale kept at
the mean), the negative log-likelihood of the bulk under the limiting density ``hmu_diag.htmp.logpdf`` (``"ml"``)
or the KS distance under ``hmu_diag.htmp.cdf`` (``"ks"``).  Measured on 12 samples each of n = 500 eigenvalues
(tests/test_htmp_fit.py::test_moments_vs_ml_vs_ks), RMSE of log kappa: gamma 0.33, kappa 1: moments 0.059,
ML 0.062, KS 0.094; gamma 0.5, kappa 5.5: moments 0.124, ML 0.098, KS 0.190.  KS is the worst (it looks at one
point of the CDF), so ML is the refinement offered; ML gains ~20% over the log-moment estimator at larger kappa
(none at small kappa, where the log-moment statistic is the Gamma-limit sufficient statistic) but costs 5-20x more
(1.3 s vs 0.23 s and 0.39 s vs 0.06 s per fit under load), which breaks the per-layer budget (the fits must
cost < ~10% of the layer's eigendecomposition).  Hence ``"moments"`` is the default.

Confidence intervals (``ci``): ``"asymptotic"`` inverts the score-type band ``|L - g_n(kappa)| <= z sd_n(kappa)``
(moment CLT under the finite-n model; second-moment statistic: Wald band ``R -+ z sd`` at the estimate);
``"bootstrap"`` is a parametric bootstrap (``n_boot`` samples of the fitted law from ``hmu_diag.htmp.sample``,
refitted with the same estimator, percentile interval).  kappa is reported as ``inf`` (indistinguishable from
Marchenko-Pastur) when the interval's upper end reaches ``KAPPA_MP_EQUIV = 200`` - the authors' code treats
kappa >= 200 as MP (htmp.md sec. 3.2) - and a white Gaussian layer (Dyson index 1, kappa = n) lands there for
n >~ 200.  Both intervals are valid under the finite-n HTMP model; real spectra with GOE-like local statistics
fluctuate less, so for them the intervals are conservative.

Spikes: HTMP has no outlier component.  With ``spikes=True`` the values above the fitted law's upper ``1 - alpha/n``
quantile (MP-like fits: the Tracy-Widom edge) are excluded and the fit repeated until the bulk no longer changes
(6 rounds at most; spikes that inflated kappa's tail come out one round after another); their count is
``n_spikes`` (for an inverse fit these are the smallest eigenvalues).

Bounded time: a fit evaluates the law in fit mode (:mod:`hmu_diag.htmp._accuracy`: CDF to ``FIT_CDF_ATOL`` = 1e-4
absolute instead of 1e-10, from tabulated quantiles where the table covers (gamma, kappa), else interpolated across
near-integer delta instead of ODE + mpmath).  mpmath (the last resort
for start values of extreme parameters, e.g. gamma ~ 5e-4 where delta ~ 5e4) runs under ``FIT_MPMATH_LIMITS``; where
the law cannot be evaluated within them, kappa and its CI (which need no evaluation of the law) are still reported,
D and loglik of that orientation are NaN, the spike cutoff falls back to the Gamma-tail quantile and an ML/KS
refinement keeps the moment estimate.

Goodness of fit: ``D`` is the KS distance of the bulk evaluated at 64 evenly spaced order statistics (all of them
for n <= 64; a lower bound within ~1/64 of the full sup, which keeps the cost of the HTMP CDF fixed; CDF error
< 1e-4), ``loglik`` the binned log-likelihood of :func:`hmu_diag.fits.mp.binned_loglik` on 32 equal-count bins.

Orientation: ``"direct"`` fits lambda ~ HTMP; ``"inverse"`` fits 1/lambda ~ HTMP (kernels: NTK, CK, Gauss-Newton;
htmp.md sec. 2.3); ``"auto"`` fits both and keeps the smaller KS distance D.  Tail predictions (htmp.md sec. 3.6):
``delta = kappa (1-gamma)/(2 gamma)``; the HTMP variable's density behaves as ``x^(delta-1)`` near 0
(``pred_lower_exp``) and its inverse has an upper power-law tail with exponent ``pred_alpha = 1 + delta``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.polynomial import polynomial as P
from scipy import special

from hmu_diag.choices import HTMP_ORIENTATIONS
from hmu_diag.errors import HmuDiagError, OptionError
from hmu_diag.fits._result import FitStatus
from hmu_diag.fits.mp import MPFit, binned_loglik, bins, clean_evals, fit_mp, ks_distance, tw_threshold
from hmu_diag.htmp import cdf as htmp_cdf
from hmu_diag.htmp import logpdf as htmp_logpdf
from hmu_diag.htmp import sample as htmp_sample
from hmu_diag.htmp import sf as htmp_sf
from hmu_diag.htmp._accuracy import fit_mode
from hmu_diag.htmp._checks import check_gamma
from hmu_diag.htmp.mp import mp_cdf

__all__ = ["HTMPFit", "fit", "kappa_moments", "log_stat_moments", "log_stat_mp", "KAPPA_MP_EQUIV"]

KAPPA_MP_EQUIV = 200.0         # a CI reaching this: kappa reported as inf (indistinguishable from MP)
KAPPA_MIN, KAPPA_SEARCH_MAX = 1e-4, 1e6
GAMMA_LOG_MAX = 0.95           # above: second-moment estimator
_EM_HEAD = 16                  # exact terms before Euler-Maclaurin in _polygamma_sum
_MAX_SPIKE_ROUNDS = 6          # fit / exclude outliers rounds (stops as soon as the bulk is unchanged)
_ZETA_MAX_SIZE = 48            # _polygamma: below this many points scipy's Hurwitz zeta is cheaper than the series
_N_KS_POINTS = 64              # order statistics at which the HTMP CDF is evaluated for D (module docstring)

Orientation = Literal["direct", "inverse", "auto"]


@dataclass(frozen=True)
class HTMPFit(FitStatus):
    """Result of :func:`fit`.  ``status`` is "ok" or "failed: <why>" (numbers nan, orientation "").

    kappa          eigenvalue repulsion; ``inf`` when indistinguishable from MP (module docstring)
    kappa_lo/hi    confidence interval at ``ci_level`` (``kappa_hi`` may be inf); ``ci_method`` says how
    scale          sigma^2, mean of the fitted HTMP variable (lambda, or 1/lambda for "inverse")
    orientation    "direct" (lambda ~ HTMP) or "inverse" (1/lambda ~ HTMP)
    delta          kappa (1-gamma)/(2 gamma)
    pred_lower_exp delta - 1: density exponent of the HTMP variable at 0
    pred_alpha     1 + delta: upper-tail power-law exponent of the inverse of the HTMP variable
    D, loglik      KS distance and binned log-likelihood (:func:`hmu_diag.fits.mp.binned_loglik`) of the bulk
    n_spikes       values excluded as outliers above the fitted law (inverse fits: the smallest eigenvalues)
    mp_D, mp_loglik  the same scores of the Marchenko-Pastur fit (:func:`hmu_diag.fits.mp.fit_mp`) of the data
    statistic      "log-moment" or "second-moment"; method: "moments", "ml" or "ks"
    """

    kappa: float
    kappa_lo: float
    kappa_hi: float
    ci_method: str
    ci_level: float
    scale: float
    gamma: float
    orientation: str
    delta: float
    pred_lower_exp: float
    pred_alpha: float
    D: float
    loglik: float
    n_spikes: int
    mp_D: float
    mp_loglik: float
    n: int
    n_dropped: int = 0
    statistic: str = ""
    method: str = "moments"
    status: str = "ok"

    def __repr__(self) -> str:
        if not self.ok:
            return self.failed_repr()
        return (f"HTMPFit(kappa={self.kappa:.4g} [{self.kappa_lo:.3g}, {self.kappa_hi:.3g}], scale={self.scale:.4g}, "
                f"orientation={self.orientation!r}, delta={self.delta:.4g}, D={self.D:.3g} (MP {self.mp_D:.3g}), "
                f"n_spikes={self.n_spikes}, n={self.n})")


# ------------------------------------------------------------------------------------ finite-n moment laws


_BERNOULLI = ((2, 1.0 / 6.0), (4, -1.0 / 30.0), (6, 1.0 / 42.0), (8, -1.0 / 30.0), (10, 5.0 / 66.0))


@functools.lru_cache(maxsize=None)
def _asymptotic_coefficients(m: int) -> tuple[float, ...]:
    """c_j of psi^(m)(y) ~ (-1)^(m+1) y^-m [(m-1)! + m!/(2y) + sum_j c_j y^-2j], c_j = B_2j (2j+m-1)!/(2j)!."""
    return tuple(b2 * math.factorial(j2 + m - 1) / math.factorial(j2) for j2, b2 in _BERNOULLI)


def _polygamma(m: int, x):
    """psi^(m)(x) for x > 0: digamma for m = 0; for m >= 1 the recurrence psi^(m)(x) = psi^(m)(x+1) +
    (-1)^(m+1) m!/x^(m+1) six times, then the asymptotic series at y = x + 6 (DLMF 5.15.8):
    (-1)^(m+1) [(m-1)!/y^m + m!/(2 y^(m+1)) + sum_j B_2j (2j+m-1)!/((2j)! y^(2j+m))], error < 1e-10 relative.
    Much faster than scipy.special.polygamma or the Hurwitz zeta function (~300 ns per point) on the moment tables;
    in-place products instead of powers, since numpy's per-call cost dominates.  Arrays of at most
    ``_ZETA_MAX_SIZE`` points go to ``scipy.special.zeta`` directly (one call; agrees to ~2e-12 relative)."""
    if m == 0:
        return special.digamma(x)
    x = np.asarray(x, dtype=np.float64)
    if x.size <= _ZETA_MAX_SIZE:                  # psi^(m)(x) = (-1)^(m+1) m! zeta(m+1, x): fewer calls
        return (-1.0) ** (m + 1) * math.factorial(m) * special.zeta(m + 1.0, x)
    y = x.copy()                                  # shifted in place
    acc = np.zeros_like(y)
    for _ in range(6):
        r = np.reciprocal(y)
        term = r * r
        for _ in range(m - 1):
            term *= r
        acc += term
        y += 1.0
    r = np.reciprocal(y)
    r2 = r * r
    poly = np.zeros_like(r)
    for c in reversed(_asymptotic_coefficients(m)):     # Horner in 1/y^2
        poly += c
        poly *= r2
    poly += math.factorial(m) * 0.5 * r
    poly += math.factorial(m - 1)
    for _ in range(m):
        poly *= r
    acc *= math.factorial(m)
    acc += poly
    return acc if m % 2 else -acc


def _digamma_trigamma_sums(x0: np.ndarray, step: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum psi(x_j), sum psi'(x_j)) over x_j = x0 + j step, j = 0..n-1, elementwise over arrays x0, step.

    The first ``_EM_HEAD`` terms (smallest arguments, where psi varies fastest) are summed exactly; the rest by
    Euler-Maclaurin, sum_{j=a}^{b} h(j) = int_a^b h + (h(a) + h(b))/2 + (h'(b) - h'(a))/12 + R with
    int psi(x0 + u step) du = lnGamma/step; the remainder R ~ (step/x)^3/720 relative is below 1e-6 because
    step/x <= 1/_EM_HEAD.  Three special-function calls in all (digamma, trigamma, tetragamma).
    """
    head = min(n, _EM_HEAD)
    x0, step = np.asarray(x0, dtype=np.float64), np.asarray(step, dtype=np.float64)
    j = np.arange(head, dtype=np.float64)
    if head < n:
        j = np.concatenate([j, [head, n - 1]])          # + the first and last Euler-Maclaurin points
    xs = x0[..., None] + step[..., None] * j
    dg, tg = special.digamma(xs), _polygamma(1, xs)
    s0, s1 = dg[..., :head].sum(axis=-1), tg[..., :head].sum(axis=-1)
    if head == n:
        return s0, s1
    ends = xs[..., head:]
    p2 = _polygamma(2, ends)
    lg = special.gammaln(ends)
    s0 = s0 + ((lg[..., 1] - lg[..., 0]) / step + 0.5 * (dg[..., head] + dg[..., head + 1])
               + step / 12.0 * (tg[..., head + 1] - tg[..., head]))
    s1 = s1 + ((dg[..., head + 1] - dg[..., head]) / step + 0.5 * (tg[..., head] + tg[..., head + 1])
               + step / 12.0 * (p2[..., 1] - p2[..., 0]))
    return s0, s1


def log_stat_moments(kappa, gamma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(g_n(kappa), Var_n(kappa)): mean and variance of L = log mean(lambda) - mean(log lambda) under finite-n HTMP.

    Vectorised over ``kappa`` (finite, > 0); formulas in the module docstring.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    step = kappa / (2.0 * n)
    x0 = kappa / (2.0 * gamma) - step * (n - 1)          # smallest k_i / 2
    s0, s1 = _digamma_trigamma_sums(x0, step, n)
    mean = np.log(kappa / gamma) - s0 / n - math.log(2.0)
    var = np.maximum(s1 / n**2 - 2.0 * gamma / (n * kappa), 0.0)
    return mean, var


def log_stat_mp(gamma: float, n: int) -> float:
    """g_n(inf) = -(1/n) sum_i log(1 - gamma (i-1)/n): the log-moment statistic of the MP (kappa -> inf) limit."""
    return float(-np.mean(np.log1p(-gamma * np.arange(n) / n)))


#: log kappa grid (12 points per decade) on which the moment laws are tabulated to bracket and solve roots
_U_GRID = np.linspace(math.log(KAPPA_MIN), math.log(KAPPA_SEARCH_MAX), 121)


@functools.lru_cache(maxsize=1024)
def _log_stat_table(gamma: float, n: int) -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
    """(g_n, sd_n) of :func:`log_stat_moments` on ``exp(_U_GRID)``, as arrays and as lists of Python floats (for
    the scalar root polish); cached: layers of one shape share it."""
    g, v = log_stat_moments(np.exp(_U_GRID), gamma, n)
    sd = np.sqrt(v)
    return g, sd, g.tolist(), sd.tolist()


def _roots_decreasing(table: tuple[np.ndarray, np.ndarray, list[float], list[float]], stat: float,
                      z: float) -> list[float]:
    """Roots kappa of g_n - stat, g_n - z sd_n - stat and g_n + z sd_n - stat (the point estimate and the two ends of
    the score band), from their values on ``exp(_U_GRID)`` (``table`` of :func:`_log_stat_table`, tabulated once per
    layer shape).  Each root is the first crossing on the grid: g_n and g_n + z sd_n decrease, while g_n - z sd_n
    rises again slightly towards its MP limit at large kappa, which matters only when kappa itself is inf.

    The grid brackets each root to 1/12 decade; inside the bracket the function is the cubic through the four nearest
    grid values (Newton form in r = (u - u_first)/h, u = log kappa; error ~ 0.023 h^4 |f^(4)|), whose root four
    Illinois (modified false position) steps find: relative error in kappa < 1e-4 (measured against brentq on the exact
    law: 9e-5 at n = 16, the worst case, 6e-6 on a 24-per-decade grid that costs 1.7x more; either is far below the
    statistical error: a 95% CI spans +-20% or more at n = 100).  No sign change on
    [KAPPA_MIN, KAPPA_SEARCH_MAX]: inf (f > 0 everywhere) or KAPPA_MIN (f <= 0 everywhere).  The bracket search is
    one numpy pass per function; the polish runs on plain floats (numpy's per-call overhead would dominate).
    """
    g, sd, g_list, sd_list = table
    last = _U_GRID.size - 1
    h = float(_U_GRID[1] - _U_GRID[0])
    roots = []
    for c in (0.0, -z, z):
        vals = g - stat if c == 0.0 else g + c * sd - stat
        below = vals <= 0
        k = int(below.argmax())                                         # first grid point past the root
        if not below[k]:
            roots.append(math.inf)
            continue
        if k == 0:
            roots.append(KAPPA_MIN)
            continue
        first = min(max(k - 2, 0), last - 3)                            # cubic stencil first..first+3
        f0, f1, f2, f3 = (g_list[i] - stat if c == 0.0 else g_list[i] + c * sd_list[i] - stat
                          for i in range(first, first + 4))
        d1, d2, d3 = f1 - f0, f2 - 2 * f1 + f0, f3 - 3 * f2 + 3 * f1 - f0

        def cubic(r: float) -> float:
            return f0 + r * (d1 + (r - 1) * (d2 / 2 + (r - 2) * d3 / 6))

        a, b = float(k - 1 - first), float(k - first)                   # bracket in r
        fa, fb = (f0, f1, f2, f3)[k - 1 - first], (f0, f1, f2, f3)[k - first]
        side = 0
        for _ in range(4):
            m = min(max(a + (b - a) * fa / (fa - fb), a), b) if fa != fb else a
            fm = cubic(m)
            if fm > 0:                                                  # the root lies above m
                if side > 0:
                    fb *= 0.5                                           # Illinois: both ends must move
                a, fa, side = m, fm, 1
            else:
                if side < 0:
                    fa *= 0.5
                b, fb, side = m, fm, -1
        r = a + (b - a) * fa / (fa - fb) if fa != fb else a
        roots.append(math.exp(float(_U_GRID[first]) + h * r))
    return roots


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


def kappa_moments(x, gamma: float, *, level: float = 0.95) -> tuple[float, float, float, str]:
    """Moment estimate of kappa with its asymptotic CI: ``(kappa, kappa_lo, kappa_hi, statistic)``.

    ``x``: positive values of the HTMP variable (one orientation, spikes removed).  See the module docstring for the
    statistics; kappa values above ``KAPPA_SEARCH_MAX`` are inf, below ``KAPPA_MIN`` are clipped to it.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x / np.max(x)                 # scale-free statistics; avoids overflow for inverse spectra (1/lambda ~ 1e300)
    n = x.size
    z = _normal_quantile(0.5 + level / 2.0)
    m1 = float(np.mean(x))
    if gamma <= GAMMA_LOG_MAX:
        stat = math.log(m1) - float(np.mean(np.log(x)))
        kappa, lo, hi = _roots_decreasing(_log_stat_table(gamma, n), stat, z)
        return kappa, lo, hi, "log-moment"
    stat = float(np.mean(x**2)) / m1**2
    c0, c1 = _ratio_mean_coefficients(gamma, n)

    def solve(target: float) -> float:
        excess = target - c0
        if excess <= c1 / KAPPA_SEARCH_MAX:
            return math.inf
        return KAPPA_MIN if excess >= c1 / KAPPA_MIN else c1 / excess

    kappa = solve(stat)
    sd = _ratio_sd(min(kappa, 1e9), gamma, n)
    return kappa, solve(stat + z * sd), solve(stat - z * sd), "second-moment"


# ------------------------------------------------------------------------------------------------ the fit


def _model_cdf(y: np.ndarray, gamma: float, kappa: float, scale: float) -> np.ndarray:
    """CDF of HTMP(gamma, kappa, scale) at y; MP closed form when kappa is inf."""
    if math.isinf(kappa):
        return mp_cdf(y, gamma, scale)
    return htmp_cdf(y, gamma, kappa, scale)


def _upper_threshold(gamma: float, kappa: float, scale: float, n: int, n_per: int, alpha: float,
                     y_max: float) -> float:
    """Value above which the largest of n draws of the fitted law lies with probability ~alpha (spike cutoff).

    MP-like (kappa >= KAPPA_MP_EQUIV): the Tracy-Widom edge (:func:`hmu_diag.fits.mp.tw_threshold`).  Otherwise the
    1 - alpha/n quantile: a first guess from the Gamma-type upper tail (htmp.md sec. 3.6, shape s + a = kappa(1+gamma)/
    (2 gamma), rate theta = kappa/(2 gamma scale)), then log sf interpolated on a geometric grid around it.  The
    asymptotic tail is lighter than the exact one (htmp.md sec. 3.6), so the guess lies below the exact quantile and
    the exact sf is evaluated only when the largest value ``y_max`` exceeds the guess.
    """
    if kappa >= KAPPA_MP_EQUIV:
        return tw_threshold(scale, gamma, n_per, alpha=alpha)
    a, s_ = kappa / 2.0, kappa / (2.0 * gamma)
    theta = s_ / scale
    target = alpha / n
    log_c = special.gammaln(s_ + a) - special.gammaln(1.0 + a) - special.gammaln(s_)
    q = math.exp(min(math.log(target) - log_c, 0.0))
    guess = max(float(special.gammainccinv(s_ + a, q)) / theta, scale)
    if y_max <= guess:
        return guess
    grid = guess * np.geomspace(0.5, 4.0, 10)
    try:
        with np.errstate(divide="ignore"):
            log_sf = np.log(htmp_sf(grid, gamma, kappa, scale))
    except HmuDiagError:          # not evaluable within the fit's limits: keep the Gamma-tail quantile
        return guess
    ok = np.isfinite(log_sf)
    if ok.sum() < 2 or not (log_sf[ok][0] >= math.log(target) >= log_sf[ok][-1]):
        return guess
    return float(np.interp(-math.log(target), -log_sf[ok], grid[ok]))


def _refine(y: np.ndarray, gamma: float, kappa0: float, lo: float, hi: float, method: str) -> float:
    """Minimise the negative log-likelihood (``"ml"``) or KS distance (``"ks"``) over log kappa, scale = mean(y)."""
    if math.isinf(lo):                                    # even the lower band is MP: nothing to refine
        return kappa0
    scale = float(np.mean(y))
    n = y.size
    u_lo = math.log(max(lo, KAPPA_MIN)) - 0.5
    u_hi = math.log(min(hi if math.isfinite(hi) else 10 * KAPPA_MP_EQUIV, 10 * KAPPA_MP_EQUIV)) + 0.5
    from scipy import optimize         # imported on first use: the default moment fit needs no optimiser
    if method == "ml":
        obj = lambda u: -float(np.sum(htmp_logpdf(y, gamma, math.exp(u), scale)))  # noqa: E731
    else:
        obj = lambda u: ks_distance(htmp_cdf(y, gamma, math.exp(u), scale), n)  # noqa: E731
    try:
        res = optimize.minimize_scalar(obj, bounds=(u_lo, u_hi), method="bounded", options={"xatol": 1e-3})
    except HmuDiagError:          # the law cannot be evaluated within the fit's limits: keep the moment estimate
        return kappa0
    return math.exp(res.x) if math.isfinite(kappa0) or res.x < u_hi - 0.6 else kappa0


@dataclass(frozen=True)
class _OneFit:
    kappa: float
    lo: float
    hi: float
    scale: float
    statistic: str
    bulk: np.ndarray
    n_spikes: int
    D: float
    loglik: float


def _fit_orientation(y: np.ndarray, gamma: float, *, n_per: int, spikes: bool, alpha: float, level: float,
                     method: str) -> _OneFit:
    """Fit HTMP to sorted positive y (one orientation), excluding outliers above the fitted law."""
    bulk = y
    for rnd in range(_MAX_SPIKE_ROUNDS):
        kappa, lo, hi, stat = kappa_moments(bulk, gamma, level=level)
        if method != "moments":
            kappa = _refine(bulk, gamma, kappa, lo, hi, method)
        scale = float(np.mean(bulk))
        if not spikes or rnd == _MAX_SPIKE_ROUNDS - 1:
            break
        thr = _upper_threshold(gamma, kappa if hi < KAPPA_MP_EQUIV else math.inf, scale, bulk.size, n_per, alpha,
                               float(bulk[-1]))
        keep = max(int(np.searchsorted(y, thr, side="right")), 10)
        if keep == bulk.size:
            break
        bulk = y[:keep]                                   # the threshold may also move up and re-admit values
    n = bulk.size
    ranks = np.linspace(0, n - 1, min(n, _N_KS_POINTS)).round().astype(np.intp)   # distinct: spacing >= 1
    edges, counts = bins(bulk)
    k_model = math.inf if hi >= KAPPA_MP_EQUIV else kappa
    try:
        values = _model_cdf(np.concatenate([bulk[ranks], edges]), gamma, k_model, scale)
    except HmuDiagError:          # the law cannot be evaluated within the fit's limits: no goodness of fit
        return _OneFit(kappa, lo, hi, scale, stat, bulk, y.size - n, math.nan, math.nan)
    return _OneFit(kappa, lo, hi, scale, stat, bulk, y.size - n, ks_distance(values[:ranks.size], n, ranks),
                   binned_loglik(counts, values[ranks.size:]))


def _bootstrap_ci(one: _OneFit, gamma: float, *, n_boot: int, seed: int, level: float,
                  method: str) -> tuple[float, float]:
    """Percentile interval of kappa refitted to ``n_boot`` samples of the fitted law (:func:`hmu_diag.htmp.sample`)."""
    rng = np.random.default_rng(seed)
    kappa = one.kappa if one.hi < KAPPA_MP_EQUIV else math.inf
    n = one.bulk.size
    est = np.empty(n_boot)
    for b in range(n_boot):
        y = htmp_sample(n, gamma, kappa, one.scale, rng=rng)
        y = y[y > 0]
        k, lo, hi, _ = kappa_moments(y, gamma, level=level)
        est[b] = _refine(y, gamma, k, lo, hi, method) if method != "moments" else k
    q = np.quantile(np.log(est), [(1 - level) / 2, (1 + level) / 2])
    return float(np.exp(q[0])), float(np.exp(q[1]))


def _failed(gamma: float, why: str, n: int, n_dropped: int, ci: str, level: float, mp_D: float = math.nan,
            mp_loglik: float = math.nan) -> HTMPFit:
    nan = math.nan
    return HTMPFit(nan, nan, nan, ci, level, nan, gamma, "", nan, nan, nan, nan, nan, 0, mp_D, mp_loglik, n,
                   n_dropped, status=f"failed: {why}")


def fit(evals, gamma: float, orientation: Orientation = "auto", *, spikes: bool = True,
        ci: Literal["asymptotic", "bootstrap"] = "asymptotic", n_boot: int = 200, seed: int = 0, level: float = 0.95,
        method: Literal["moments", "ml", "ks"] = "moments", alpha: float = 0.01, n_matrices: int = 1,
        mp: MPFit | None = None) -> HTMPFit:
    """Fit HTMP(gamma, kappa, scale) to an eigenvalue spectrum (formulas and choices: module docstring).

    Parameters
    ----------
    evals : array-like
        Eigenvalues of the smaller Gram (raw units).  Zeros, negatives and non-finite values are dropped
        (``n_dropped``); ``n_matrices`` pooled matrices contribute ``len(evals)/n_matrices`` each.
    gamma : float
        Aspect ratio M/N in (0, 1] (smaller over larger dimension).
    orientation : {"auto", "direct", "inverse"}
        "direct": lambda ~ HTMP; "inverse": 1/lambda ~ HTMP; "auto": both, the smaller KS distance wins.
    spikes : bool
        Exclude outliers above the fitted law (reported as ``n_spikes``).
    ci : {"asymptotic", "bootstrap"}
        Moment CLT under the finite-n model (fast), or parametric bootstrap with ``n_boot`` refits (~0.2 s each at
        n = 768).  ``level``: coverage of the interval.
    method : {"moments", "ml", "ks"}
        Point estimator: log-/second-moment (default, fast), or its refinement by ML or KS on the bulk.
    alpha : float
        Size of the spike test (MP Tracy-Widom edge and the HTMP 1 - alpha/n quantile).
    mp : MPFit, optional
        :func:`hmu_diag.fits.mp.fit_mp` of the same eigenvalues, if already computed (its D and loglik are
        reported); computed here otherwise.

    Returns an :class:`HTMPFit`; never raises on data (``status="failed: ..."``: fewer than 10 positive values or
    all equal), raises :class:`OptionError` on invalid options.
    """
    g = check_gamma(gamma, "htmp.fit")
    if orientation not in HTMP_ORIENTATIONS:
        raise OptionError(f"htmp.fit: orientation must be 'auto', 'direct' or 'inverse', got {orientation!r}")
    if ci not in ("asymptotic", "bootstrap"):
        raise OptionError(f"htmp.fit: ci must be 'asymptotic' or 'bootstrap', got {ci!r}")
    if method not in ("moments", "ml", "ks"):
        raise OptionError(f"htmp.fit: method must be 'moments', 'ml' or 'ks', got {method!r}")
    if not 0.0 < level < 1.0 or not 0.0 < alpha < 1.0:
        raise OptionError(f"htmp.fit: level and alpha must lie in (0, 1), got level={level!r}, alpha={alpha!r}")
    if ci == "bootstrap" and int(n_boot) < 10:
        raise OptionError(f"htmp.fit: n_boot must be >= 10 for a bootstrap CI, got {n_boot!r}")
    x, n_dropped = clean_evals(evals, "htmp.fit")
    ci_name = "bootstrap" if ci == "bootstrap" else "asymptotic"
    if x.size < 10:
        return _failed(g, f"fewer than 10 positive eigenvalues ({x.size})", x.size, n_dropped, ci_name, level)
    if x[-1] <= x[0] * (1.0 + 1e-9):
        return _failed(g, "all eigenvalues equal", x.size, n_dropped, ci_name, level)
    with np.errstate(all="ignore"), fit_mode():
        return _fit(x, g, n_dropped, orientation, spikes=spikes, ci=ci_name, n_boot=int(n_boot), seed=seed,
                    level=level, method=method, alpha=alpha, n_matrices=n_matrices, mp=mp)


def _fit(x: np.ndarray, g: float, n_dropped: int, orientation: str, *, spikes: bool, ci: str, n_boot: int, seed: int,
         level: float, method: str, alpha: float, n_matrices: int, mp: MPFit | None) -> HTMPFit:
    """:func:`fit` on validated, cleaned input."""
    if mp is None:
        mp = fit_mp(x, g, spikes=spikes, alpha=alpha, n_matrices=n_matrices)
    n_per = max(int(round((x.size + n_dropped) / max(int(n_matrices), 1))), 1)
    kw = dict(n_per=n_per, spikes=spikes, alpha=alpha, level=level, method=method)
    fits = {}
    if orientation in ("auto", "direct"):
        fits["direct"] = _fit_orientation(x, g, **kw)
    if orientation in ("auto", "inverse"):
        fits["inverse"] = _fit_orientation(np.sort(1.0 / x), g, **kw)
    best = min(fits, key=lambda o: (not math.isfinite(fits[o].D), fits[o].D))
    one = fits[best]
    lo, hi = one.lo, one.hi
    if ci == "bootstrap":
        lo, hi = _bootstrap_ci(one, g, n_boot=n_boot, seed=seed, level=level, method=method)
    kappa = one.kappa
    if hi >= KAPPA_MP_EQUIV or kappa >= KAPPA_MP_EQUIV:
        kappa, hi = math.inf, math.inf
    delta = kappa * (1.0 - g) / (2.0 * g) if g < 1.0 else 0.0
    return HTMPFit(kappa=kappa, kappa_lo=lo, kappa_hi=hi, ci_method=f"{ci} ({one.statistic})", ci_level=level,
                   scale=one.scale, gamma=g, orientation=best, delta=delta, pred_lower_exp=delta - 1.0,
                   pred_alpha=1.0 + delta, D=one.D, loglik=one.loglik, n_spikes=one.n_spikes, mp_D=mp.D,
                   mp_loglik=mp.loglik, n=x.size, n_dropped=n_dropped, statistic=one.statistic, method=method)
