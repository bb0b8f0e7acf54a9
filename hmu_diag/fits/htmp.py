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

    g_n(kappa)  = log(kappa/gamma) - (1/n) sum_i [psi(k_i/2) + log 2]                     (exact mean of L up to O(1/(n kappa)))
    Var_n(kappa) = (1/n^2) sum_i psi'(k_i/2) - 2 gamma/(n kappa)                          (delta method, exact variances)

(the n -> inf limit of g_n is htmp.md sec. 4.3's ``log s - (2/kappa)[lnGamma(s) - lnGamma(delta)]``).  g_n decreases
from +inf (kappa -> 0) to its MP value g_n(inf) = -(1/n) sum log(1 - gamma (i-1)/n); a statistic at or below it
gives kappa = inf.  For gamma > 0.95 the lower tail (density ~ lambda^(delta-1), delta -> 0) makes log lambda
depend on eigenvalues below floating-point resolution, so the second-moment statistic ``R = mean(lambda^2)/mean^2``
is used instead, with ``E_n[R] = n E[tr T^2]/E[tr T]^2`` in closed form (-> 1 + gamma + 2 gamma/kappa) and its
standard deviation from 64 seeded draws of the chi-square traces (O(n) each, no eigendecomposition).

``"ml"`` / ``"ks"``.  Refinements that start from the moment estimate and minimise, over log kappa (scale kept at
the mean), the negative log-likelihood of the bulk under the limiting density ``hmu_diag.htmp.logpdf`` (``"ml"``)
or the KS distance under ``hmu_diag.htmp.cdf`` (``"ks"``).  Measured (tests/test_htmp_fit.py,
``test_moments_vs_ml_vs_ks``): ML recovers kappa with a smaller error than KS, and the log-moment estimator is
within a few percent of ML's RMSE - it is the ML estimator of the kappa -> 0 (Gamma) limit and uses the exact
finite-n law - at ~1/20 of the cost, hence the default.

Confidence intervals (``ci``): ``"asymptotic"`` inverts the score-type band ``|L - g_n(kappa)| <= z sd_n(kappa)``
(moment CLT under the finite-n model; second-moment statistic: Wald band ``R -+ z sd`` at the estimate);
``"bootstrap"`` is a parametric bootstrap (``n_boot`` samples of the fitted law from ``hmu_diag.htmp.sample``,
refitted with the same estimator, percentile interval).  kappa is reported as ``inf`` (indistinguishable from
Marchenko-Pastur) when the interval's upper end reaches ``KAPPA_MP_EQUIV = 200`` - the authors' code treats kappa >= 200
as MP (htmp.md sec. 3.2) - and a white Gaussian layer (Dyson index 1, kappa = n) lands there for n >~ 200.

Spikes: HTMP has no outlier component.  With ``spikes=True`` the eigenvalues above the fitted law's upper
``1 - alpha/n`` quantile are excluded and the fit repeated (at most 3 rounds); their count is ``n_spikes``.

Orientation: ``"direct"`` fits lambda ~ HTMP; ``"inverse"`` fits 1/lambda ~ HTMP (kernels: NTK, CK, Gauss-Newton;
htmp.md sec. 2.3); ``"auto"`` fits both and keeps the smaller KS distance D.  Tail predictions (htmp.md sec. 3.6):
``delta = kappa (1-gamma)/(2 gamma)``; the HTMP variable's density behaves as ``x^(delta-1)`` near 0
(``pred_lower_exp``) and its inverse has an upper power-law tail with exponent ``pred_alpha = 1 + delta``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import optimize, special

from hmu_diag.errors import OptionError
from hmu_diag.fits.mp import binned_loglik, bins, check_gamma, clean_evals, fit_mp, ks_distance, tw_threshold
from hmu_diag.htmp import cdf as htmp_cdf
from hmu_diag.htmp import logpdf as htmp_logpdf
from hmu_diag.htmp import sample as htmp_sample
from hmu_diag.htmp import sf as htmp_sf
from hmu_diag.htmp.mp import mp_cdf

__all__ = ["HTMPFit", "fit", "kappa_moments", "log_stat_moments", "log_stat_mp", "KAPPA_MP_EQUIV"]

KAPPA_MP_EQUIV = 200.0         # a CI reaching this: kappa reported as inf (indistinguishable from MP)
KAPPA_MIN, KAPPA_SEARCH_MAX = 1e-4, 1e6
GAMMA_LOG_MAX = 0.95           # above: second-moment estimator
_N_TRACE_SIMS = 64             # draws of the chi-square traces for sd(R)
_EM_HEAD = 16                  # exact terms before Euler-Maclaurin in _polygamma_sum
_MAX_SPIKE_ROUNDS = 3
_N_KS_POINTS = 64              # order statistics at which the HTMP CDF is evaluated for D (module docstring)

Orientation = Literal["direct", "inverse", "auto"]


@dataclass(frozen=True)
class HTMPFit:
    """Result of :func:`fit`.  ``status`` is "ok" or "failed: <why>" (numbers nan, orientation "").

    kappa          eigenvalue repulsion; ``inf`` when indistinguishable from MP (module docstring)
    kappa_lo/hi    confidence interval at ``ci_level`` (``kappa_hi`` may be inf); ``ci_method`` says how
    scale          sigma^2, mean of the fitted HTMP variable (lambda, or 1/lambda for "inverse")
    orientation    "direct" (lambda ~ HTMP) or "inverse" (1/lambda ~ HTMP)
    delta          kappa (1-gamma)/(2 gamma)
    pred_lower_exp delta - 1: density exponent of the HTMP variable at 0
    pred_alpha     1 + delta: upper-tail power-law exponent of the inverse of the HTMP variable
    D, loglik      KS distance and binned log-likelihood (:func:`hmu_diag.fits.mp.binned_loglik`) of the bulk
    n_spikes       eigenvalues excluded as outliers above the fitted law
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __repr__(self) -> str:
        if not self.ok:
            return f"HTMPFit(status={self.status!r}, n={self.n}, n_dropped={self.n_dropped})"
        return (f"HTMPFit(kappa={self.kappa:.4g} [{self.kappa_lo:.3g}, {self.kappa_hi:.3g}], scale={self.scale:.4g}, "
                f"orientation={self.orientation!r}, delta={self.delta:.4g}, D={self.D:.3g} (MP {self.mp_D:.3g}), "
                f"n_spikes={self.n_spikes}, n={self.n})")


# ------------------------------------------------------------------------------------ finite-n moment laws


_BERNOULLI = ((2, 1.0 / 6.0), (4, -1.0 / 30.0), (6, 1.0 / 42.0), (8, -1.0 / 30.0), (10, 5.0 / 66.0))


def _polygamma(m: int, x):
    """psi^(m)(x) for x > 0: digamma for m = 0; for m >= 1 the recurrence psi^(m)(x) = psi^(m)(x+1) +
    (-1)^(m+1) m!/x^(m+1) six times, then the asymptotic series at y = x + 6 (DLMF 5.15.8):
    (-1)^(m+1) [(m-1)!/y^m + m!/(2 y^(m+1)) + sum_j B_2j (2j+m-1)!/((2j)! y^(2j+m))], error < 1e-10 relative.
    Much faster than scipy.special.polygamma, which goes through the Hurwitz zeta function."""
    if m == 0:
        return special.digamma(x)
    x = np.asarray(x, dtype=np.float64)
    fm = math.factorial(m)
    inv = 1.0 / (x[..., None] + np.arange(6.0))
    acc = fm * np.sum(inv ** (m + 1), axis=-1)
    y = x + 6.0
    series = math.factorial(m - 1) / y**m + fm / (2.0 * y ** (m + 1))
    for j2, b2 in _BERNOULLI:
        series = series + b2 * math.factorial(j2 + m - 1) / math.factorial(j2) / y ** (j2 + m)
    return (-1.0) ** (m + 1) * (acc + series)


def _polygamma_sum(order: int, x0: np.ndarray, step: np.ndarray, n: int) -> np.ndarray:
    """sum_{j=0}^{n-1} psi^(order)(x0 + j step) for order 0 or 1, elementwise over arrays x0, step; O(_EM_HEAD) each.

    The first ``_EM_HEAD`` terms (smallest arguments, where psi varies fastest) are summed exactly; the rest by
    Euler-Maclaurin with the B2 and B4 corrections (relative step <= 1/_EM_HEAD; error < 1e-9 relative).
    """
    head = min(n, _EM_HEAD)
    x0, step = np.asarray(x0, dtype=np.float64)[..., None], np.asarray(step, dtype=np.float64)[..., None]
    exact = np.sum(_polygamma(order, x0 + step * np.arange(head)), axis=-1)
    if head == n:
        return exact
    x0, step = x0[..., 0], step[..., 0]
    ends = np.stack([x0 + step * head, x0 + step * (n - 1)])          # first EM term, last term
    anti = special.gammaln(ends) if order == 0 else special.digamma(ends)
    p0, p1, p3 = _polygamma(order, ends), _polygamma(order + 1, ends), _polygamma(order + 3, ends)
    return exact + ((anti[1] - anti[0]) / step + 0.5 * (p0[0] + p0[1]) + step / 12.0 * (p1[1] - p1[0])
                    - step**3 / 720.0 * (p3[1] - p3[0]))


def log_stat_moments(kappa, gamma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(g_n(kappa), Var_n(kappa)): mean and variance of L = log mean(lambda) - mean(log lambda) under finite-n HTMP.

    Vectorised over ``kappa`` (finite, > 0); formulas in the module docstring.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    step = kappa / (2.0 * n)
    x0 = kappa / (2.0 * gamma) - step * (n - 1)          # smallest k_i / 2
    mean = np.log(kappa / gamma) - _polygamma_sum(0, x0, step, n) / n - math.log(2.0)
    var = np.maximum(_polygamma_sum(1, x0, step, n) / n**2 - 2.0 * gamma / (n * kappa), 0.0)
    return mean, var


def _log_stat_limit(kappa: np.ndarray, gamma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n -> inf forms of (g_n, Var_n) (htmp.md sec. 4.3): the Riemann sums of log_stat_moments as integrals."""
    s_, d = kappa / (2.0 * gamma), kappa * (1.0 - gamma) / (2.0 * gamma)
    g = np.log(s_) - (2.0 / kappa) * (special.gammaln(s_) - special.gammaln(d))
    v = (2.0 / (n * kappa)) * (special.digamma(s_) - special.digamma(d)) - 2.0 * gamma / (n * kappa)
    return g, v


def log_stat_mp(gamma: float, n: int) -> float:
    """g_n(inf) = -(1/n) sum_i log(1 - gamma (i-1)/n): the log-moment statistic of the MP (kappa -> inf) limit."""
    return float(-np.mean(np.log1p(-gamma * np.arange(n) / n)))


def _roots_decreasing(f, guess=None) -> np.ndarray:
    """Solve f(kappa) = 0 for each column of a decreasing vector function f (array of kappa -> (len, J)).

    No sign change on [KAPPA_MIN, KAPPA_SEARCH_MAX]: inf (f > 0 everywhere) or KAPPA_MIN (f < 0 everywhere).
    With ``guess`` (a cheap approximation of f with the same signature), its roots on a 6-per-decade log grid
    start secant iterations on f in log kappa (4 vectorised calls of f); columns that do not converge, or all of
    them without a guess, are bracketed on that grid with f itself and shrunk 256-fold by two rounds of 17-point
    sub-grids before a final linear interpolation (relative error ~1e-6, far below the statistical error).
    """
    ends = f(np.array([KAPPA_MIN, KAPPA_SEARCH_MAX]))
    out = np.where(ends[1] >= 0, math.inf, np.where(ends[0] <= 0, KAPPA_MIN, math.nan))
    todo = np.flatnonzero(np.isnan(out))
    if todo.size == 0:
        return out
    u = np.linspace(math.log(KAPPA_MIN), math.log(KAPPA_SEARCH_MAX), 61)
    if guess is not None:
        vals = guess(np.exp(u))[:, todo]
        k = np.clip(np.argmax(vals <= 0, axis=0), 1, u.size - 1)
        fa, fb = vals[k - 1, np.arange(todo.size)], vals[k, np.arange(todo.size)]
        u0 = np.where(fa > fb, u[k - 1] + (u[k] - u[k - 1]) * fa / np.where(fa > fb, fa - fb, 1.0), u[k])
        u1 = u0 + 0.01
        f0 = f(np.exp(u0))[np.arange(todo.size), todo]
        for _ in range(6):
            f1 = f(np.exp(u1))[np.arange(todo.size), todo]
            denom = np.where(f1 != f0, f1 - f0, 1.0)
            u0, f0, u1 = u1, f1, np.clip(u1 - f1 * (u1 - u0) / denom, u[0], u[-1])
            if np.all(np.abs(u1 - u0) < 1e-7):
                break
        done = np.abs(u1 - u0) < 1e-6
        out[todo[done]] = np.exp(u1[done])
        todo = todo[~done]
        if todo.size == 0:
            return out
    vals = f(np.exp(u))                                   # (61, J)
    cols = np.arange(todo.size)
    k = np.clip(np.argmax(vals[:, todo] <= 0, axis=0), 1, u.size - 1)   # first grid point past each root
    a, b = u[k - 1], u[k]
    fa, fb = vals[k - 1, todo], vals[k, todo]
    for _ in range(2):                                    # two rounds of 17-point sub-grids: bracket / 256
        sub = a[:, None] + (b - a)[:, None] * np.linspace(0.0, 1.0, 17)         # (J', 17)
        v = f(np.exp(sub.ravel())).reshape(todo.size, 17, -1)[cols, :, todo]   # (J', 17)
        j = np.clip(np.argmax(v <= 0, axis=1), 1, 16)
        a, b = sub[cols, j - 1], sub[cols, j]
        fa, fb = v[cols, j - 1], v[cols, j]
    out[todo] = np.exp(a + (b - a) * fa / (fa - fb))    # linear interpolation in the final bracket
    return out


def _ratio_mean(kappa, gamma: float, n: int) -> np.ndarray:
    """E_n[R] ~ n E[tr T^2] / E[tr T]^2 for R = mean(lambda^2)/mean(lambda)^2 (chi2: E X^2 = k^2 + 2k); vectorised."""
    kappa = np.asarray(kappa, dtype=np.float64)[..., None]
    i = np.arange(n, dtype=np.float64)
    kd = kappa / gamma - kappa * i / n                    # diagonal d_i^2 dof
    kt = kappa * (n - 1 - i) / n                          # sub-diagonal t_i^2 dof (the last is 0: there is no t_n)
    kt0 = kappa * (n - i) / n * (i > 0)                   # t_{i-1}^2 on diagonal i
    e_tr2 = np.sum(kd**2 + 2 * kd + 2 * kd * kt0 + kt0**2 + 2 * kt0 + 2 * kt * kd, axis=-1)
    return n * e_tr2 / (n * kappa[..., 0] / gamma) ** 2


def _ratio_sd(kappa: float, gamma: float, n: int, seed: int) -> float:
    """Standard deviation of R under finite-n HTMP from seeded draws of the chi-square traces (O(n) each)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.float64)
    kd, kt = kappa / gamma - kappa * i / n, kappa * (n - 1 - i[:-1]) / n
    d2 = rng.chisquare(kd, size=(_N_TRACE_SIMS, n))
    t2 = rng.chisquare(kt, size=(_N_TRACE_SIMS, n - 1))
    diag = d2.copy()
    diag[:, 1:] += t2
    tr1 = diag.sum(axis=1)
    tr2 = (diag**2).sum(axis=1) + 2.0 * (t2 * d2[:, :-1]).sum(axis=1)
    return float(np.std(n * tr2 / tr1**2))


def kappa_moments(x, gamma: float, *, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, str]:
    """Moment estimate of kappa with its asymptotic CI: ``(kappa, kappa_lo, kappa_hi, statistic)``.

    ``x``: positive values of the HTMP variable (one orientation, spikes removed).  See the module docstring for the
    statistics; kappa values above ``KAPPA_SEARCH_MAX`` are inf, below ``KAPPA_MIN`` are clipped to it.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    z = float(special.ndtri(0.5 + level / 2.0))
    m1 = float(np.mean(x))
    if gamma <= GAMMA_LOG_MAX:
        stat = math.log(m1) - float(np.mean(np.log(x)))

        def bands(g: np.ndarray, v: np.ndarray) -> np.ndarray:
            sd = np.sqrt(np.maximum(v, 0.0))
            return np.stack([g - stat, g - z * sd - stat, g + z * sd - stat], axis=-1)

        kappa, lo, hi = _roots_decreasing(lambda k: bands(*log_stat_moments(k, gamma, n)),
                                          guess=lambda k: bands(*_log_stat_limit(k, gamma, n)))
        return float(kappa), float(lo), float(hi), "log-moment"
    stat = float(np.mean(x**2)) / m1**2
    kappa = float(_roots_decreasing(lambda k: (_ratio_mean(k, gamma, n) - stat)[:, None])[0])
    sd = _ratio_sd(min(kappa, 1e9), gamma, n, seed)
    lo, hi = _roots_decreasing(lambda k: _ratio_mean(k, gamma, n)[:, None] - stat + np.array([-z * sd, z * sd]))
    return kappa, float(lo), float(hi), "second-moment"


# ------------------------------------------------------------------------------------------------ the fit


def _model_cdf(y: np.ndarray, gamma: float, kappa: float, scale: float) -> np.ndarray:
    """CDF of HTMP(gamma, kappa, scale) at y; MP closed form when kappa is inf."""
    if math.isinf(kappa):
        return mp_cdf(y, gamma, scale)
    return htmp_cdf(y, gamma, kappa, scale)


def _upper_threshold(gamma: float, kappa: float, scale: float, n: int, n_per: int, alpha: float) -> float:
    """Value above which the largest of n draws of the fitted law lies with probability ~alpha (spike cutoff).

    MP-like (kappa >= KAPPA_MP_EQUIV): the Tracy-Widom edge (:func:`hmu_diag.fits.mp.tw_threshold`).  Otherwise the
    1 - alpha/n quantile: a first guess from the Gamma-type upper tail (htmp.md sec. 3.6, shape s + a = kappa(1+gamma)/
    (2 gamma), rate theta = kappa/(2 gamma scale)), then log sf interpolated on a geometric grid around it.
    """
    if kappa >= KAPPA_MP_EQUIV:
        return tw_threshold(scale, gamma, n_per, alpha=alpha)
    a, s_ = kappa / 2.0, kappa / (2.0 * gamma)
    theta = s_ / scale
    target = alpha / n
    log_c = special.gammaln(s_ + a) - special.gammaln(1.0 + a) - special.gammaln(s_)
    q = math.exp(min(math.log(target) - log_c, 0.0))
    guess = max(float(special.gammainccinv(s_ + a, q)) / theta, scale)
    grid = guess * np.geomspace(0.5, 4.0, 10)
    with np.errstate(divide="ignore"):
        log_sf = np.log(htmp_sf(grid, gamma, kappa, scale))
    ok = np.isfinite(log_sf)
    if ok.sum() < 2 or not (log_sf[ok][0] >= math.log(target) >= log_sf[ok][-1]):
        return guess
    return float(np.interp(-math.log(target), -log_sf[ok], grid[ok]))


def _refine(y: np.ndarray, gamma: float, kappa0: float, lo: float, hi: float, method: str) -> float:
    """Minimise the negative log-likelihood (``"ml"``) or KS distance (``"ks"``) over log kappa, scale = mean(y)."""
    scale = float(np.mean(y))
    n = y.size
    u_lo = math.log(max(lo, KAPPA_MIN)) - 0.5
    u_hi = math.log(min(hi if math.isfinite(hi) else 10 * KAPPA_MP_EQUIV, 10 * KAPPA_MP_EQUIV)) + 0.5
    if method == "ml":
        obj = lambda u: -float(np.sum(htmp_logpdf(y, gamma, math.exp(u), scale)))  # noqa: E731
    else:
        obj = lambda u: ks_distance(htmp_cdf(y, gamma, math.exp(u), scale), n)  # noqa: E731
    res = optimize.minimize_scalar(obj, bounds=(u_lo, u_hi), method="bounded", options={"xatol": 1e-3})
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
                     seed: int, method: str) -> _OneFit:
    """Fit HTMP to sorted positive y (one orientation), excluding outliers above the fitted law."""
    bulk = y
    for _ in range(_MAX_SPIKE_ROUNDS):
        kappa, lo, hi, stat = kappa_moments(bulk, gamma, level=level, seed=seed)
        if method != "moments":
            kappa = _refine(bulk, gamma, kappa, lo, hi, method)
        scale = float(np.mean(bulk))
        if not spikes:
            break
        thr = _upper_threshold(gamma, kappa, scale, bulk.size, n_per, alpha)
        keep = max(int(np.searchsorted(y, thr, side="right")), 10)
        if keep >= bulk.size:
            break
        bulk = y[:keep]
    n = bulk.size
    ranks = np.unique(np.linspace(0, n - 1, min(n, _N_KS_POINTS)).round().astype(int))
    edges, counts = bins(bulk)
    k_model = math.inf if hi >= KAPPA_MP_EQUIV else kappa
    values = _model_cdf(np.concatenate([bulk[ranks], edges]), gamma, k_model, scale)
    return _OneFit(kappa, lo, hi, scale, stat, bulk, y.size - n, ks_distance(values[:ranks.size], n, ranks),
                   binned_loglik(counts, values[ranks.size:]))


def _bootstrap_ci(one: _OneFit, gamma: float, *, n_boot: int, seed: int, level: float, method: str) -> tuple[float, float]:
    """Percentile interval of kappa refitted to ``n_boot`` samples of the fitted law (:func:`hmu_diag.htmp.sample`)."""
    rng = np.random.default_rng(seed)
    kappa = one.kappa if one.hi < KAPPA_MP_EQUIV else math.inf
    n = one.bulk.size
    est = np.empty(n_boot)
    for b in range(n_boot):
        y = htmp_sample(n, gamma, kappa, one.scale, rng=rng)
        y = y[y > 0]
        k, lo, hi, _ = kappa_moments(y, gamma, level=level, seed=seed)
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
        method: Literal["moments", "ml", "ks"] = "moments", alpha: float = 0.01, n_matrices: int = 1) -> HTMPFit:
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

    Returns an :class:`HTMPFit`; never raises on data (``status="failed: ..."``: fewer than 10 positive values or
    all equal), raises :class:`OptionError` on invalid options.
    """
    g = check_gamma(gamma, "htmp.fit")
    if orientation not in ("auto", "direct", "inverse"):
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
    mp = fit_mp(x, g, spikes=spikes, alpha=alpha, n_matrices=n_matrices)
    n_per = max(int(round((x.size + n_dropped) / max(int(n_matrices), 1))), 1)
    kw = dict(n_per=n_per, spikes=spikes, alpha=alpha, level=level, seed=seed, method=method)
    fits = {}
    if orientation in ("auto", "direct"):
        fits["direct"] = _fit_orientation(x, g, **kw)
    if orientation in ("auto", "inverse"):
        fits["inverse"] = _fit_orientation(np.sort(1.0 / x), g, **kw)
    best = min(fits, key=lambda o: (not math.isfinite(fits[o].D), fits[o].D))
    one = fits[best]
    lo, hi = one.lo, one.hi
    if ci == "bootstrap":
        lo, hi = _bootstrap_ci(one, g, n_boot=int(n_boot), seed=seed, level=level, method=method)
    kappa = one.kappa
    if hi >= KAPPA_MP_EQUIV or kappa >= KAPPA_MP_EQUIV:
        kappa, hi = math.inf, math.inf
    delta = kappa * (1.0 - g) / (2.0 * g) if g < 1.0 else 0.0
    return HTMPFit(kappa=kappa, kappa_lo=lo, kappa_hi=hi, ci_method=f"{ci_name} ({one.statistic})", ci_level=level,
                   scale=one.scale, gamma=g, orientation=best, delta=delta, pred_lower_exp=delta - 1.0,
                   pred_alpha=1.0 + delta, D=one.D, loglik=one.loglik, n_spikes=one.n_spikes, mp_D=mp.D,
                   mp_loglik=mp.loglik, n=x.size, n_dropped=n_dropped, statistic=one.statistic, method=method)
