"""Likelihood-ratio tests: the fitted power-law tail against alternative tails (CSN sec. 5, Vuong 1989).

Every alternative is fitted by maximum likelihood to the same tail x >= x_min, conditioned on x >= x_min:

    exponential            p(x) = lam exp(-lam (x - x_min))                         (closed-form MLE)
    stretched_exponential  p(x) = beta lam x^(beta-1) exp(-lam (x^beta - x_min^beta))
    lognormal              p(x) = phi((ln x - mu)/s) / (x s Q((ln x_min - mu)/s)),  Q = normal survival
    truncated_power_law    p(x) = x^-alpha exp(-lam x) / (x_min^(1-alpha) E_alpha(lam x_min)),
                           E_p(z) = int_1^inf t^-p e^(-z t) dt  (power law with exponential cut-off)

R = sum_i [ln p_PL(x_i) - ln p_alt(x_i)] (R > 0 favours the power law).  Non-nested alternatives (the first
three): Vuong's test, p = erfc(|R| / sqrt(2 n s^2)) with s^2 the variance of the pointwise differences, and
normalised ratio R / sqrt(n s^2).  The truncated power law nests the power law (lam = 0): Wilks' test,
p = P(chi2_1 > 2|R|).  Unlike powerlaw 2.0.0's ``distribution_compare``, ``nested`` is decided by the pair of
models only (powerlaw's ``A or B and C`` precedence ignores an explicit nested=False).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.special

from hmu_diag.errors import OptionError

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
ALTERNATIVES = ("exponential", "stretched_exponential", "lognormal", "truncated_power_law")


@dataclass(frozen=True)
class LikelihoodRatio:
    """Power law vs ``alternative`` on the same tail.  ``favours`` is decided at ``p_value < level``."""

    alternative: str
    R: float
    p_value: float
    normalized_R: float
    nested: bool
    n_tail: int
    params: dict
    favours: str


def _minimize(nll, starts, bounds):
    """Bounded quasi-Newton from several starts, best kept.  The bounds stop degenerate limits (a lognormal
    or stretched exponential tending to a power law) from running off to infinity."""
    from scipy import optimize         # imported on first use: the likelihood-ratio tests are optional
    best = None
    for x0 in starts:
        res = optimize.minimize(nll, np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds]),
                                method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 300})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def _exponential(x, xmin):
    lam = float(1.0 / np.mean(x - xmin))
    return np.log(lam) - lam * (x - xmin), {"lambda": lam}


def _stretched_exponential(x, xmin):
    lx = np.log(x)

    def logpdf(p):
        beta, lam = np.exp(p)
        return np.log(beta * lam) + (beta - 1) * lx - lam * (x ** beta - xmin ** beta)

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    starts = [np.log([beta, 1.0 / np.mean(x ** beta - xmin ** beta)]) for beta in (1.0, 0.5, 0.2)]
    p = _minimize(nll, starts, [(math.log(1e-4), math.log(20.0)), (-60, 60)])
    return logpdf(p), {"beta": float(np.exp(p[0])), "lambda": float(np.exp(p[1]))}


def _lognormal(x, xmin):
    lx = np.log(x)
    l0 = math.log(xmin)

    def logpdf(p):
        mu, s = p[0], math.exp(p[1])
        z = (lx - mu) / s
        return -0.5 * z * z - _LOG_SQRT_2PI - lx - math.log(s) - scipy.special.log_ndtr((mu - l0) / s)

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    sd = max(float(np.std(lx)), 1e-3)
    starts = [np.array([np.mean(lx), math.log(sd)]), np.array([l0, math.log(2 * sd)]),
              np.array([l0 - 3 * sd, math.log(2 * sd)])]
    p = _minimize(nll, starts, [(l0 - 200.0, lx.max() + 50.0), (math.log(1e-3), math.log(50.0))])
    return logpdf(p), {"mu": float(p[0]), "sigma": float(math.exp(p[1]))}


def _log_en(p: float, z: float) -> float:
    """ln E_p(z), E_p(z) = int_1^inf t^-p exp(-z t) dt = z^(p-1) Gamma(1-p, z)  (z > 0).

    p < 1: through the regularised upper incomplete gamma; otherwise (or if that underflows) by quadrature of
    exp(-z) int_0^inf exp(-z u) (1+u)^-p du, whose integrand then decays at least like (1+u)^-1 e^(-z u).
    """
    if p < 1:
        q = scipy.special.gammaincc(1.0 - p, z)
        if q > 1e-300:
            return (p - 1.0) * math.log(z) + scipy.special.gammaln(1.0 - p) + math.log(q)
    from scipy import integrate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(lambda u: math.exp(-z * u) * (1.0 + u) ** -p, 0.0, np.inf, epsabs=0,
                                epsrel=1e-12, limit=200)
    return -z + math.log(val)


def _truncated_power_law(x, xmin, alpha0):
    lx = np.log(x)

    def logpdf(p):
        a, lam = p[0], math.exp(p[1])
        return -a * lx - lam * x - ((1 - a) * math.log(xmin) + _log_en(a, lam * xmin))

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    starts = [np.array([alpha0, math.log(lam / np.mean(x))]) for lam in (1e-3, 0.3)]
    p = _minimize(nll, starts, [(-5, 50), (math.log(1e-12 / xmin), math.log(1e3 / xmin))])
    return logpdf(p), {"alpha": float(p[0]), "lambda": float(math.exp(p[1]))}


def compare_tail(tail: np.ndarray, xmin: float, alpha: float, alternative: str, level: float = 0.1) -> LikelihoodRatio:
    """Likelihood-ratio test of the power law (alpha, xmin) against ``alternative`` on ``tail`` (all >= xmin)."""
    fitters = {"exponential": _exponential, "stretched_exponential": _stretched_exponential,
               "lognormal": _lognormal, "truncated_power_law": lambda x, xmin: _truncated_power_law(x, xmin, alpha)}
    if alternative not in fitters:
        raise OptionError(f"alternative={alternative!r}: expected one of {list(fitters)}")
    x = np.asarray(tail, dtype=np.float64)
    l_pl = math.log(alpha - 1.0) - math.log(xmin) - alpha * np.log(x / xmin)
    l_alt, params = fitters[alternative](x, xmin)
    d = l_pl - l_alt
    n = d.size
    R = float(np.sum(d))
    nested = alternative == "truncated_power_law"
    s2 = float(np.mean((d - d.mean()) ** 2))
    if nested:
        R = min(R, 0.0)      # the nesting model can only gain likelihood; a positive R is optimiser noise
        p = float(scipy.special.chdtrc(1, 2.0 * abs(R)))             # chi2_1 survival function
    else:
        p = float(scipy.special.erfc(abs(R) / math.sqrt(2.0 * n * s2))) if s2 > 0 else 1.0
    normalized = R / math.sqrt(n * s2) if s2 > 0 else 0.0
    favours = "neither" if p >= level else ("power_law" if R > 0 else alternative)
    return LikelihoodRatio(alternative=alternative, R=R, p_value=p, normalized_R=normalized, nested=nested,
                           n_tail=n, params=params, favours=favours)
